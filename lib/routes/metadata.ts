import type { Static } from 'typebox'
import type { FastifyPluginAsync } from 'fastify'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import {
  AuthorizationServerMetadata,
  authorizationServerMetadata,
  ProtectedResourceMetadata,
  protectedResourceMetadata
} from './documents.js'
import type { ResolvedConfig } from '../options/index.js'
import type { RouteLimits } from './limits.js'

export interface MetadataRouteDeps {
  config: ResolvedConfig
  limits: RouteLimits
}

/** Metadata may be cached briefly; it changes only with configuration. */
const CACHE = 'public, max-age=300'

/** RFC 8414 and RFC 9728 documents, served at the paths derived from the issuer and resources. */
export const metadataRoutes: FastifyPluginAsync<MetadataRouteDeps> = async (instance, { config, limits }) => {
  const fastify = instance.withTypeProvider<TypeBoxTypeProvider>()
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
  const serve = (url: string, body: Static<typeof ProtectedResourceMetadata>) => {
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
