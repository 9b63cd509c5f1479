import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyRequest, onRequestHookHandler } from 'fastify'
import { errors, UpstreamTokenError } from './errors.js'
import { createAuthenticate, type AuthenticateOptions } from './guard.js'
import { resolveOptions, type McpOAuthOptions, type ResolvedConfig } from './options/index.js'
import { TokenValidator, type McpAuthInfo } from './token/validator.js'
import { GrantService } from './token/issue.js'
import { MemoryStore } from './storage/memory/index.js'
import type { Store } from './storage/contract.js'
import { AuthorizationFlow } from './flow/authorize.js'
import { RefreshTokenGrant } from './token/grants/refresh-token.js'
import { AuthorizationCodeGrant } from './token/grants/authorization-code.js'
import { ClientCredentialsGrant } from './token/grants/client-credentials.js'
import { TokenEndpoint } from './token/endpoint.js'
import { JwtBearerGrant, TrustedIssuers } from './token/grants/jwt-bearer.js'
import { SafeFetcher } from './security/fetch.js'
import { RemoteKeySets } from './security/jwks.js'
import { RegistrationService } from './clients/registration.js'
import { RevocationService } from './token/revocation.js'
import { UpstreamTokenService, type UpstreamAccess } from './token/upstream.js'
import { Auditor } from './security/audit.js'
import { KeyRing } from './security/keyring.js'
import { Signer } from './security/signing.js'
import { DeploymentKeys } from './security/secret.js'
import { oauthRoutes } from './routes/oauth.js'
import { RouteLimits } from './routes/limits.js'
import { corsOptions } from './routes/cors.js'
import cors from '@fastify/cors'
import { ClientDirectory } from './clients/directory.js'
import { ClientAuthentication } from './clients/authenticate.js'
import { AssertionVerifier } from './security/assertion.js'
import { pageStyle } from './routes/html.js'
import { setupTelemetry } from './telemetry/index.js'

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
  /**
   * A valid upstream (identity provider) access token for the grant behind this request, refreshed
   * when close to expiry. Throws UpstreamTokenError (`retryable` tells whether to try again).
   */
  getUpstreamToken (request: FastifyRequest): Promise<UpstreamAccess>
  /** Sign a user out everywhere: every grant of theirs, with its tokens. Returns how many grants went. */
  revokeUser (userId: string): Promise<number>
  /** Remove every grant of one client. */
  revokeClient (clientId: string): Promise<number>
  /** Remove one grant (refresh family) and its access tokens. */
  revokeGrant (grantId: string): Promise<boolean>
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
  // Keys derived from the deployment secret, which the store never holds (DeploymentKeys).
  const deploymentKeys = new DeploymentKeys(config.secret)
  const auditor = new Auditor(fastify.log, opts.auditSink, deploymentKeys.key('user-pseudonym'))
  // Telemetry (lib/telemetry): metrics and spans wrap the store and the provider before any service
  // is built on them; with both off, they come back untouched and nothing else is added.
  const ownStore: Store = opts.store ?? new MemoryStore({ now })
  const telemetry = await setupTelemetry(fastify, config.telemetry, {
    auditor,
    store: ownStore,
    provider: opts.provider,
    basePath: config.basePath,
    staticClientIds: config.clients.map(c => c.client_id)
  })
  const store: Store = telemetry.store
  const validator = new TokenValidator(store, now, config.clockSkewSeconds * 1000)
  const limits = new RouteLimits({
    rateLimits: config.rateLimits,
    stepSpans: telemetry.routes?.stepSpans === true,
    // A store that shares its Redis connection makes the limits hold across replicas.
    redis: store.rateLimitRedis,
    auditor
  })
  const grants = new GrantService(store, config, now)
  const keyRing = new KeyRing(config.encryptionKeys)
  const signer = new Signer(config.secret)

  for (const warning of config.warnings) auditor.emit('config_weakened', { setting: warning })

  const clients = new ClientDirectory({ config, store, auditor, now, fetchHooks: opts.cimdTestHooks })
  await clients.saveStaticClients()
  const findClient = (clientId: string) => clients.find(clientId)
  // One assertion verifier per registration: its replay cache is the store, shared by every replica.
  const assertions = new AssertionVerifier({ store, now })
  const clientAuth = new ClientAuthentication({
    findClient,
    verifier: assertions,
    keySets: clients.keySets(),
    issuer: config.issuer,
    tokenEndpoint: config.endpoints.token,
    resourceServers: config.introspection.resourceServers,
    now
  })

  // Background work (upstream revocation retries) runs on unref'd timers released on close.
  const timers = new Set<NodeJS.Timeout>()
  const schedule = (ms: number, fn: () => void) => {
    const timer = setTimeout(() => { timers.delete(timer); fn() }, ms)
    timer.unref()
    timers.add(timer)
  }
  const provider = telemetry.provider
  const revocation = new RevocationService({ config, store, provider, keyRing, auditor, now, schedule })
  const revokeGrant = (grantId: string) => revocation.revokeGrant(grantId)
  const upstream = new UpstreamTokenService({
    store,
    provider,
    keyRing,
    auditor,
    now,
    revokeGrant,
    thresholdMs: config.upstreamRefreshThresholdSeconds * 1000,
    recheckMs: config.upstreamRecheckSeconds * 1000,
    // A re-check may make two upstream calls (refresh, then UserInfo or the user's organisations).
    lockWaitMs: 2 * config.upstreamTimeoutMs + 2000
  })
  const flow = new AuthorizationFlow({ config, store, provider, keyRing, auditor, now, findClient })
  const registration = new RegistrationService({ config, store, auditor, now, revokeClient: clientId => revocation.revokeClient(clientId) })
  // The enterprise IdPs' keys: one key-set cache per registration, beside the clients' own.
  const idpFetcher = new SafeFetcher({
    timeoutMs: config.enterprise.timeoutMs,
    maxBytes: 256 * 1024,
    mediaType: ['application/json', 'application/jwk-set+json'],
    userAgent: 'fastify-mcp-oauth (identity provider keys)',
    // Operator-configured URLs: a development IdP may be plain http on loopback.
    allowHttpLoopback: true,
    allowPrivateAddresses: config.enterprise.allowPrivateAddresses
  })
  const idpKeys = new RemoteKeySets({ fetcher: idpFetcher, now })
  const jwtBearer = config.enterprise.issuers.length === 0
    ? undefined
    : new JwtBearerGrant({
      config,
      verifier: assertions,
      issuers: new TrustedIssuers({ issuers: config.enterprise.issuers, fetcher: idpFetcher, keySets: idpKeys, now }),
      grants,
      auditor
    })
  const tokenEndpoint = new TokenEndpoint({
    authorizationCode: new AuthorizationCodeGrant({ config, store, grants, auditor, now, revokeGrant }),
    refreshToken: new RefreshTokenGrant({
      config,
      store,
      auditor,
      now,
      revokeGrant,
      recheck: grant => upstream.recheck(grant),
      successorKey: deploymentKeys.key('refresh-successor')
    }),
    clientCredentials: new ClientCredentialsGrant({ config, grants, auditor }),
    jwtBearer,
    keepAlive: client => registration.keepAlive(client)
  })

  fastify.decorate('mcpOAuth', {
    authenticate: createAuthenticate(config, validator, () => limits.perUser),
    validator,
    storage: ownStore,
    config,
    grants,
    auditor,
    getUpstreamToken: async (request: FastifyRequest) => {
      const auth = request.mcpAuth
      if (auth === null) throw new UpstreamTokenError('The request was not authenticated by the guard', false)
      return upstream.get(auth.grantId)
    },
    revokeUser: (userId: string) => revocation.revokeUser(userId),
    revokeClient: (clientId: string) => revocation.revokeClient(clientId),
    revokeGrant
  } satisfies McpOAuthDecorator)
  fastify.decorateRequest('mcpAuth', null)

  fastify.addHook('onClose', async () => {
    clients.close()
    for (const timer of timers) clearTimeout(timer)
    timers.clear()
    await store.close?.()
  })

  if (config.cors !== null) await fastify.register(cors, corsOptions(config))
  await fastify.register(oauthRoutes, {
    config,
    flow,
    tokenEndpoint,
    signer,
    style: pageStyle(config),
    now,
    clientAuth,
    registration,
    revocation,
    limits,
    ...(telemetry.routes !== undefined ? { telemetry: telemetry.routes } : {})
  })
}

export const mcpOAuth = fp(plugin, { name: 'fastify-mcp-oauth', fastify: '5.x' })
export default mcpOAuth

// The public face: the plugin, its options and decorators, the error types, and the contracts a
// custom store or provider implements. Services and helpers stay internal; the decorators give
// applications what they need of them.
export { OAuthError, errors } from './errors.js'
export type { OAuthErrorCode } from './errors.js'
export { StoreUnavailableError, GrantRevokedError, UpstreamError, UpstreamTokenError } from './errors.js'
export { MemoryStore } from './storage/memory/index.js'
export type { MemoryStoreOptions } from './storage/memory/index.js'
export type * from './storage/contract.js'
export type { McpOAuthOptions, ResolvedConfig, ResolvedResource } from './options/index.js'
export type { AuthenticateOptions } from './guard.js'
export type { McpAuthInfo, ValidationResult, TokenValidator } from './token/validator.js'
export type { GrantService, TokenResponse, TokenPair, NewGrant } from './token/issue.js'
export type { UpstreamAccess } from './token/upstream.js'
export { generateKey } from './security/keyring.js'
export type { EncryptionKey } from './security/keyring.js'
export type { Auditor, AuditEvents, AuditEventName, AuditSink } from './security/audit.js'
export type { Provider, UpstreamTokens, UpstreamUser } from './providers/types.js'
export type { UpstreamErrorKind } from './errors.js'
