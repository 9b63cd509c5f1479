import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { AuthorizationFlow } from '../flow/authorize.js'
import { authenticateClient } from '../clients/authenticate.js'
import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { ClientRecord } from '../storage/contract.js'
import type { RefreshService } from '../token/grants/refresh-token.js'
import type { RegistrationService } from '../clients/registration.js'
import type { RouteLimits } from './limits.js'

export interface TokenRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  flow: AuthorizationFlow
  refresh: RefreshService
  now: () => number
  findClient: (clientId: string) => Promise<ClientRecord | null>
  registration: Pick<RegistrationService, 'keepAlive'>
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
  client_id: Type.Optional(Param),
  client_secret: Type.Optional(Param)
})

const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('Bearer'),
  expires_in: Type.Integer(),
  refresh_token: Type.String(),
  scope: Type.String()
})

export const tokenRoutes: FastifyPluginAsync<TokenRouteDeps> = async (fastify, { config, flow, refresh, now, findClient, registration, limits }) => {
  fastify.post(`${config.basePath}/oauth/token`, {
    schema: { body: TokenBody, response: { 200: TokenResponse } },
    config: limits.route('token')
  }, async (request, reply) => {
    const body = request.body as Record<string, unknown>
    const client = await authenticateClient({ authorization: request.headers.authorization, body }, findClient, now())
    const grantType = body.grant_type
    if (grantType !== 'authorization_code' && grantType !== 'refresh_token') {
      throw new OAuthError('unsupported_grant_type', 'grant_type must be authorization_code or refresh_token')
    }
    if (!client.grantTypes.includes(grantType)) {
      throw new OAuthError('unauthorized_client', `This client is not registered for ${grantType}`)
    }
    const tokens = grantType === 'authorization_code'
      ? await flow.exchangeCode(client, body)
      : await refresh.refresh(client, body)
    // Tokens issued to an authenticated client are its use (finding 7): it renews a dynamic client's
    // expiry. Merely naming a client (an authorization request anyone can send) does not.
    await registration.keepAlive(client)
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
    return tokens
  })
}
