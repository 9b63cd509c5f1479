import fp from 'fastify-plugin'
import type { FastifyPluginAsync, onRequestHookHandler } from 'fastify'
import { errors } from './errors.js'
import { createAuthenticate, type AuthenticateOptions } from './guard.js'
import { resolveOptions, type McpOAuthOptions, type ResolvedConfig } from './options.js'
import { metadataRoutes } from './routes/metadata.js'
import { TokenValidator, type McpAuthInfo } from './core/validator.js'
import { GrantService } from './core/grants.js'
import { MemoryStore } from './storage/memory.js'
import type { Store } from './storage/types.js'

export interface McpOAuthDecorator {
  /** An onRequest hook that admits only requests with a valid access token and the given scopes. */
  authenticate (opts?: AuthenticateOptions): onRequestHookHandler
  /** Local validation of access tokens, for transports that do not go through the guard. */
  validator: TokenValidator
  /** The store in use (tokens, clients, flows). */
  storage: Store
  /** The resolved configuration: issuer, endpoints, resources, lifetimes. */
  config: Readonly<ResolvedConfig>
  /** Grants and token minting (used by the token endpoint; exposed for service integrations). */
  grants: GrantService
}

declare module 'fastify' {
  interface FastifyInstance {
    mcpOAuth: McpOAuthDecorator
  }
  interface FastifyRequest {
    /** Set by the guard on success; null on routes without it. */
    mcpAuth: McpAuthInfo | null
  }
}

const plugin: FastifyPluginAsync<McpOAuthOptions> = async (fastify, opts) => {
  const config = resolveOptions(opts)
  if (fastify.prefix !== '') {
    throw new errors.INCONSISTENT_CONFIG(`the plugin is registered under the prefix "${fastify.prefix}", but the issuer ` +
      `${config.issuer} puts its endpoints at ${config.basePath === '' ? 'the root' : config.basePath}; ` +
      'register it at the root and put the path in the issuer')
  }
  const now = opts.now ?? Date.now
  const store: Store = opts.store ?? new MemoryStore({ now })
  const validator = new TokenValidator(store, now)
  const grants = new GrantService(store, config, now)

  for (const warning of config.warnings) fastify.log.warn({ event: 'config_weakened' }, warning)

  fastify.decorate('mcpOAuth', {
    authenticate: createAuthenticate(config, validator),
    validator,
    storage: store,
    config,
    grants
  } satisfies McpOAuthDecorator)
  fastify.decorateRequest('mcpAuth', null)

  fastify.addHook('onClose', async () => {
    await store.close?.()
  })

  await fastify.register(metadataRoutes, { config })
}

export const mcpOAuth = fp(plugin, { name: 'fastify-mcp-oauth', fastify: '5.x' })
export default mcpOAuth

export { OAuthError, errors } from './errors.js'
export type { OAuthErrorCode } from './errors.js'
export { MemoryStore } from './storage/memory.js'
export type { MemoryStoreOptions } from './storage/memory.js'
export type * from './storage/types.js'
export type { McpOAuthOptions, ResolvedConfig, ResolvedResource } from './options.js'
export type { AuthenticateOptions } from './guard.js'
export type { McpAuthInfo, ValidationResult } from './core/validator.js'
export { TokenValidator } from './core/validator.js'
export { GrantService } from './core/grants.js'
export type { TokenResponse, NewGrant } from './core/grants.js'
export { generateToken, hashToken } from './core/tokens.js'
