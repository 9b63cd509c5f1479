import Type from 'typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { ClientAuthentication } from '../clients/authenticate.js'
import type { RevocationService } from '../token/revocation.js'
import type { ResolvedConfig } from '../options/index.js'
import type { RouteLimits } from './limits.js'
import { ClientAssertionParams } from './schemas.js'

export interface RevokeRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  revocation: RevocationService
  clientAuth: ClientAuthentication
}

const Param = Type.String({ maxLength: 4096 })
const RevokeBody = Type.Object({
  token: Param,
  token_type_hint: Type.Optional(Type.String({ maxLength: 100 })),
  client_id: Type.Optional(Param),
  client_secret: Type.Optional(Param),
  ...ClientAssertionParams
})

/** RFC 7009 POST /oauth/revoke. */
export const revokeRoutes: FastifyPluginAsyncTypebox<RevokeRouteDeps> = async (fastify, { config, revocation, clientAuth, limits }) => {
  fastify.post(`${config.basePath}/oauth/revoke`, {
    schema: { body: RevokeBody },
    config: limits.route('revocation')
  }, async (request, reply) => {
    const { body } = request
    const client = await clientAuth.client({ authorization: request.headers.authorization, body })
    await revocation.revoke(client, { token: body.token, tokenTypeHint: body.token_type_hint })
    return reply.code(200).header('cache-control', 'no-store').send()
  })
}
