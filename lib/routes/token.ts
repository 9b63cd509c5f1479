import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import type { ClientAuthentication } from '../clients/authenticate.js'
import type { ResolvedConfig } from '../options/index.js'
import type { TokenEndpoint } from '../token/endpoint.js'
import type { RouteLimits } from './limits.js'
import { AssertionParam, ClientAssertionParams } from './schemas.js'

export interface TokenRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  tokenEndpoint: Pick<TokenEndpoint, 'grant'>
  clientAuth: ClientAuthentication
}

const Param = Type.String({ maxLength: 4096 })

/** Every parameter at most once (RFC 6749 §3.2): a repeated one is an array and fails as invalid_request. */
const TokenBody = Type.Object({
  grant_type: Type.String({ maxLength: 100 }),
  code: Type.Optional(Param),
  code_verifier: Type.Optional(Param),
  redirect_uri: Type.Optional(Param),
  refresh_token: Type.Optional(Param),
  scope: Type.Optional(Param),
  resource: Type.Optional(Param),
  // An ID-JAG (the jwt-bearer grant).
  assertion: Type.Optional(AssertionParam),
  client_id: Type.Optional(Param),
  client_secret: Type.Optional(Param),
  ...ClientAssertionParams
})

const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  refresh_token: Type.Optional(Type.String()),
  scope: Type.String()
})

/** RFC 6749 POST /oauth/token: client authentication, then the token endpoint decides. */
export const tokenRoutes: FastifyPluginAsync<TokenRouteDeps> = async (fastify, { config, tokenEndpoint, clientAuth, limits }) => {
  fastify.withTypeProvider<TypeBoxTypeProvider>().post(`${config.basePath}/oauth/token`, {
    schema: { body: TokenBody, response: { 200: TokenResponse } },
    config: limits.route('token')
  }, async (request, reply) => {
    const { body } = request
    const client = await clientAuth.client({ authorization: request.headers.authorization, body })
    const tokens = await tokenEndpoint.grant(client, body)
    // RFC 6749 §5.1: `Cache-Control: no-store` comes from the scope's onSend hook, as on every answer here.
    reply.header('pragma', 'no-cache')
    return tokens
  })
}
