import Type from 'typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { authenticateIntrospector, resourceServerCredentials } from '../clients/authenticate.js'
import type { RevocationService } from '../token/revocation.js'
import type { ResolvedConfig } from '../options/index.js'
import type { ClientRecord } from '../storage/contract.js'
import type { RouteLimits } from './limits.js'

export interface IntrospectRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  revocation: RevocationService
  now: () => number
  findClient: (clientId: string) => Promise<ClientRecord | null>
}

const Param = Type.String({ maxLength: 4096 })
const IntrospectBody = Type.Object({
  token: Param,
  token_type_hint: Type.Optional(Type.String({ maxLength: 100 })),
  client_id: Type.Optional(Param),
  client_secret: Type.Optional(Param)
})
const IntrospectResponse = Type.Object({
  active: Type.Boolean(),
  scope: Type.Optional(Type.String()),
  client_id: Type.Optional(Type.String()),
  sub: Type.Optional(Type.String()),
  subject_type: Type.Optional(Type.Union([Type.Literal('user'), Type.Literal('client')])),
  aud: Type.Optional(Type.String()),
  iss: Type.Optional(Type.String()),
  exp: Type.Optional(Type.Integer()),
  iat: Type.Optional(Type.Integer()),
  token_type: Type.Optional(Type.String())
})

/** RFC 7662 POST /oauth/introspect, for resource servers and confidential clients. */
export const introspectRoutes: FastifyPluginAsyncTypebox<IntrospectRouteDeps> = async (fastify, { config, revocation, now, findClient, limits }) => {
  const servers = resourceServerCredentials(config.introspection.resourceServers)

  fastify.post(`${config.basePath}/oauth/introspect`, {
    schema: { body: IntrospectBody, response: { 200: IntrospectResponse } },
    config: limits.route('revocation')
  }, async (request, reply) => {
    const { body } = request
    const caller = await authenticateIntrospector({ authorization: request.headers.authorization, body }, servers, findClient, now())
    reply.header('cache-control', 'no-store')
    return revocation.introspect(caller, { token: body.token, tokenTypeHint: body.token_type_hint })
  })
}
