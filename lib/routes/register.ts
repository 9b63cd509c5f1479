import Type from 'typebox'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { RegistrationService } from '../clients/registration.js'
import type { ResolvedConfig } from '../options/index.js'
import { OAuthError } from '../errors.js'
import type { RouteLimits } from './limits.js'

export interface RegisterRouteDeps {
  limits: RouteLimits
  config: ResolvedConfig
  registration: RegistrationService
}

const Str = Type.String()
const ClientInformation = Type.Object({
  client_id: Str,
  client_id_issued_at: Type.Integer(),
  client_secret: Type.Optional(Str),
  client_secret_expires_at: Type.Optional(Type.Integer()),
  registration_access_token: Type.Optional(Str),
  registration_client_uri: Str,
  redirect_uris: Type.Array(Str),
  token_endpoint_auth_method: Str,
  // private_key_jwt: the client's keys as registered (a JWK Set, serialised as it is).
  jwks: Type.Optional(Type.Unknown()),
  jwks_uri: Type.Optional(Str),
  grant_types: Type.Array(Str),
  response_types: Type.Array(Str),
  application_type: Str,
  client_name: Type.Optional(Str),
  scope: Type.Optional(Str),
  client_uri: Type.Optional(Str),
  logo_uri: Type.Optional(Str),
  tos_uri: Type.Optional(Str),
  policy_uri: Type.Optional(Str),
  software_id: Type.Optional(Str),
  software_version: Type.Optional(Str),
  contacts: Type.Optional(Type.Array(Str))
})

const Params = Type.Object({ clientId: Type.String({ minLength: 1, maxLength: 255 }) })

/** RFC 7591 §3.1: the metadata is a JSON document. */
function requireJson (contentType: string | undefined): void {
  if (contentType === undefined || !/^application\/json\s*(;|$)/i.test(contentType)) {
    throw new OAuthError('invalid_client_metadata', 'Client metadata must be sent as application/json')
  }
}

/** Registration bodies are small JSON documents. */
const BODY_LIMIT = 16 * 1024

/**
 * RFC 7591 POST /oauth/register and RFC 7592 GET/PUT/DELETE /oauth/register/:clientId. The body has
 * no schema on purpose: the metadata rules (lib/clients/metadata.ts) are the point, and answer with
 * RFC 7591's own errors (invalid_client_metadata, invalid_redirect_uri), not invalid_request.
 */
export const registerRoutes: FastifyPluginAsyncTypebox<RegisterRouteDeps> = async (fastify, { config, registration, limits }) => {
  const path = `${config.basePath}/oauth/register`
  const noStore = { 'cache-control': 'no-store', pragma: 'no-cache' }

  fastify.post(path, {
    bodyLimit: BODY_LIMIT,
    schema: { response: { 201: ClientInformation } },
    config: limits.route('register')
  }, async (request, reply) => {
    requireJson(request.headers['content-type'])
    const withToken = registration.authorize(request.headers.authorization, request.body)
    const info = await registration.register(request.body, request.ip, withToken)
    return reply.code(201).headers(noStore).send(info)
  })

  fastify.get(`${path}/:clientId`, {
    // A read rotates the registration access token: a HEAD would rotate it and drop the new one.
    exposeHeadRoute: false,
    schema: { params: Params, response: { 200: ClientInformation } },
    config: limits.route('register')
  }, async (request, reply) => {
    return reply.headers(noStore).send(await registration.read(request.params.clientId, request.headers.authorization))
  })

  fastify.put(`${path}/:clientId`, {
    bodyLimit: BODY_LIMIT,
    schema: { params: Params, response: { 200: ClientInformation } },
    config: limits.route('register')
  }, async (request, reply) => {
    requireJson(request.headers['content-type'])
    return reply.headers(noStore).send(await registration.update(request.params.clientId, request.headers.authorization, request.body))
  })

  fastify.delete(`${path}/:clientId`, {
    schema: { params: Params },
    config: limits.route('register')
  }, async (request, reply) => {
    await registration.delete(request.params.clientId, request.headers.authorization)
    return reply.code(204).headers(noStore).send()
  })
}
