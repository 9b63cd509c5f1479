import fp from 'fastify-plugin'
import type { FastifyPluginAsync, onRequestHookHandler } from 'fastify'
import { errors } from './errors.js'
import { createAuthenticate, type AuthenticateOptions } from './guard.js'
import { resolveOptions, type McpOAuthOptions, type ResolvedConfig } from './options.js'
import { metadataRoutes } from './routes/metadata.js'
import { TokenValidator, type McpAuthInfo } from './core/validator.js'
import { GrantService } from './core/grants.js'
import { MemoryStore } from './storage/memory.js'
import type { ClientRecord, Store } from './storage/types.js'
import { AuthorizationFlow } from './core/authorize.js'
import { RefreshService } from './core/refresh.js'
import { RegistrationService } from './core/registration.js'
import { hashToken } from './core/tokens.js'
import { Auditor } from './security/audit.js'
import { KeyRing } from './security/keyring.js'
import { Signer } from './security/signing.js'
import { oauthRoutes } from './routes/oauth.js'
import { pageStyle } from './routes/html.js'

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
  /** The audit event stream. */
  auditor: Auditor
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
  const auditor = new Auditor(fastify.log, opts.auditSink)
  const keyRing = new KeyRing(config.encryptionKeys)
  const signer = new Signer(config.cookieSecret)

  for (const warning of config.warnings) fastify.log.warn({ event: 'config_weakened' }, warning)
  if (opts.provider === undefined) {
    fastify.log.warn({ event: 'config_weakened' }, 'no identity provider configured: the authorization endpoint cannot log anyone in')
  }

  // Clients from the options are (re)written at every start, so a changed secret takes effect.
  const issuedAt = Math.floor(now() / 1000)
  for (const c of config.clients) {
    const method = c.token_endpoint_auth_method ?? (c.client_secret === undefined ? 'none' : 'client_secret_basic')
    const record: ClientRecord = {
      clientId: c.client_id,
      redirectUris: c.redirect_uris,
      tokenEndpointAuthMethod: method,
      grantTypes: ['authorization_code', 'refresh_token'],
      responseTypes: ['code'],
      applicationType: c.redirect_uris.every(u => u.startsWith('https:')) ? 'web' : 'native',
      metadata: {},
      clientIdIssuedAt: issuedAt,
      source: 'static'
    }
    if (c.client_secret !== undefined) record.clientSecretHash = hashToken(c.client_secret)
    if (c.client_name !== undefined) record.clientName = c.client_name
    if (c.scope !== undefined) record.scope = c.scope
    await store.saveClient(record)
  }
  const findClient = (clientId: string) => store.getClient(clientId, now())

  const flow = new AuthorizationFlow({ config, store, provider: opts.provider, grants, keyRing, auditor, now, findClient })
  const refresh = new RefreshService({ config, store, auditor, now })
  const registration = new RegistrationService({ config, store, auditor, now })

  fastify.decorate('mcpOAuth', {
    authenticate: createAuthenticate(config, validator),
    validator,
    storage: store,
    config,
    grants,
    auditor
  } satisfies McpOAuthDecorator)
  fastify.decorateRequest('mcpAuth', null)

  fastify.addHook('onClose', async () => {
    await store.close?.()
  })

  await fastify.register(metadataRoutes, { config })
  await fastify.register(oauthRoutes, { config, flow, refresh, signer, style: pageStyle(config), now, findClient, registration })
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
export { generateKey, KeyRing } from './security/keyring.js'
export type { EncryptionKey } from './security/keyring.js'
export { Auditor, hashUserId } from './security/audit.js'
export type { AuditEvents, AuditEventName, AuditSink } from './security/audit.js'
export { UpstreamError } from './providers/types.js'
export type { Provider, UpstreamTokens, UpstreamUser, UpstreamErrorKind } from './providers/types.js'
