import Type from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import { authorizationServerMetadata, protectedResourceMetadata } from './documents.js'
import type { ResolvedConfig } from '../options/index.js'
import type { RouteLimits } from './limits.js'

const StringArray = Type.Array(Type.String())

const AuthorizationServerMetadata = Type.Object({
  issuer: Type.String(),
  authorization_endpoint: Type.String(),
  token_endpoint: Type.String(),
  registration_endpoint: Type.Optional(Type.String()),
  revocation_endpoint: Type.Optional(Type.String()),
  introspection_endpoint: Type.Optional(Type.String()),
  scopes_supported: StringArray,
  response_types_supported: StringArray,
  response_modes_supported: StringArray,
  grant_types_supported: StringArray,
  token_endpoint_auth_methods_supported: StringArray,
  revocation_endpoint_auth_methods_supported: Type.Optional(StringArray),
  introspection_endpoint_auth_methods_supported: Type.Optional(StringArray),
  code_challenge_methods_supported: StringArray,
  authorization_response_iss_parameter_supported: Type.Boolean(),
  client_id_metadata_document_supported: Type.Optional(Type.Boolean()),
  service_documentation: Type.Optional(Type.String())
})

const ProtectedResourceMetadata = Type.Object({
  resource: Type.String(),
  authorization_servers: StringArray,
  scopes_supported: StringArray,
  bearer_methods_supported: StringArray,
  resource_name: Type.Optional(Type.String()),
  resource_documentation: Type.Optional(Type.String())
})

/** Metadata may be cached briefly; it changes only with configuration. */
const CACHE = 'public, max-age=300'

/** RFC 8414 and RFC 9728 documents, served at the paths derived from the issuer and resources. */
export const metadataRoutes: FastifyPluginAsync<{ config: ResolvedConfig, limits: RouteLimits }> = async (fastify, { config, limits }) => {
  const asBody = authorizationServerMetadata(config)
  for (const url of config.asMetadataPaths) {
    fastify.get(url, {
      schema: { response: { 200: AuthorizationServerMetadata } },
      config: limits.route('metadata')
    }, async (_request, reply) => {
      reply.header('cache-control', CACHE)
      return asBody
    })
  }

  const served = new Set<string>()
  const serve = (url: string, body: Record<string, unknown>) => {
    served.add(url)
    fastify.get(url, {
      schema: { response: { 200: ProtectedResourceMetadata } },
      config: limits.route('metadata')
    }, async (_request, reply) => {
      reply.header('cache-control', CACHE)
      return body
    })
  }
  for (const resource of config.resources) {
    serve(resource.metadataPath, protectedResourceMetadata(config, resource))
  }
  // The root form answers for the first (primary) resource, for clients that only try the root.
  const primary = config.resources[0]
  const root = '/.well-known/oauth-protected-resource'
  if (primary !== undefined && !served.has(root)) serve(root, protectedResourceMetadata(config, primary))
}
