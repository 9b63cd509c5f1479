import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import { authenticateClient } from '../clients/authenticate.js'
import type { RevocationService } from '../token/revocation.js'
import { hashToken, safeEqual } from '../oauth/tokens.js'
import { OAuthError } from '../errors.js'
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
  aud: Type.Optional(Type.String()),
  iss: Type.Optional(Type.String()),
  exp: Type.Optional(Type.Integer()),
  iat: Type.Optional(Type.Integer()),
  token_type: Type.Optional(Type.String())
})

/** RFC 7662 POST /oauth/introspect, for resource servers and confidential clients. */
export const introspectRoutes: FastifyPluginAsync<IntrospectRouteDeps> = async (fastify, { config, revocation, now, findClient, limits }) => {
  const servers = config.introspection.resourceServers.map(s => ({ id: s.id, secretHash: hashToken(s.secret) }))

  fastify.post(`${config.basePath}/oauth/introspect`, {
    schema: { body: IntrospectBody, response: { 200: IntrospectResponse } },
    config: limits.route('revocation')
  }, async (request, reply) => {
    const body = request.body as Record<string, unknown>
    const header = request.headers.authorization
    let caller: { clientId: string, resourceServer: boolean } | undefined
    const basic = header === undefined ? null : /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(header)
    if (basic !== null) {
      const decoded = Buffer.from(basic[1] as string, 'base64').toString('utf8')
      const colon = decoded.indexOf(':')
      const id = colon < 0 ? '' : safeDecode(decoded.slice(0, colon))
      const secretHash = hashToken(colon < 0 ? '' : safeDecode(decoded.slice(colon + 1)))
      const server = servers.find(s => s.id === id)
      if (server !== undefined) {
        if (!safeEqual(secretHash, server.secretHash)) {
          throw new OAuthError('invalid_client', 'Client authentication failed', { headers: { 'www-authenticate': 'Basic realm="oauth"' } })
        }
        caller = { clientId: id, resourceServer: true }
      }
    }
    if (caller === undefined) {
      const client = await authenticateClient({ authorization: header, body }, findClient, now())
      if (client.tokenEndpointAuthMethod === 'none') {
        throw new OAuthError('invalid_client', 'Introspection requires an authenticated (confidential) client')
      }
      caller = { clientId: client.clientId, resourceServer: false }
    }
    reply.header('cache-control', 'no-store')
    return revocation.introspect(caller, body)
  })
}

function safeDecode (value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '))
  } catch {
    return value
  }
}
