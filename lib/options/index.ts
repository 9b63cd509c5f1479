import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { errors } from '../errors.js'
import type { Store } from '../storage/contract.js'
import { STORE_METHODS } from '../storage/contract.js'
import type { Provider } from '../providers/types.js'
import type { AuditSink } from '../security/audit.js'
import type { CimdResolverOptions } from '../clients/cimd.js'
import type { MetricsOptions, TracingOptions } from '../telemetry/options.js'
import { DEFAULT_CUSTOM_SCHEMES, type RedirectPolicy } from '../oauth/redirect.js'

const Seconds = (def: number, description: string) =>
  Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000 * 5, default: def, description }))

const ScopeToken = Type.String({ pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$', maxLength: 128 })

const ResourceSchema = Type.Object({
  resource: Type.String({ minLength: 1, description: 'The URL MCP clients use, e.g. https://mcp.example.com/mcp' }),
  scopes: Type.Optional(Type.Array(ScopeToken, { description: 'scopes_supported of this resource (defaults to all)' })),
  name: Type.Optional(Type.String({ maxLength: 200, description: 'resource_name in its metadata' })),
  documentation: Type.Optional(Type.String({ description: 'resource_documentation URL' }))
}, { additionalProperties: false })

/** A rate-limit budget: `max` requests per `windowSeconds`, per client IP (per user on MCP routes). */
const Budget = Type.Object({
  max: Type.Integer({ minimum: 1 }),
  windowSeconds: Type.Integer({ minimum: 1, maximum: 86400 })
}, { additionalProperties: false })

/** Defaults generous enough for hosted clients (claude.ai, ChatGPT) whose users share egress IPs. */
export const DEFAULT_RATE_LIMITS = {
  metadata: { max: 600, windowSeconds: 60 },
  authorize: { max: 120, windowSeconds: 60 },
  token: { max: 300, windowSeconds: 60 },
  register: { max: 300, windowSeconds: 3600 },
  revocation: { max: 300, windowSeconds: 60 },
  mcp: { max: 600, windowSeconds: 60 }
} as const

export type RateLimitName = keyof typeof DEFAULT_RATE_LIMITS

const StaticClientSchema = Type.Object({
  client_id: Type.String({ minLength: 1, maxLength: 255 }),
  client_secret: Type.Optional(Type.String({ minLength: 16 })),
  redirect_uris: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
  client_name: Type.Optional(Type.String({ maxLength: 200 })),
  token_endpoint_auth_method: Type.Optional(Type.Union([
    Type.Literal('none'), Type.Literal('client_secret_basic'), Type.Literal('client_secret_post')
  ])),
  scope: Type.Optional(Type.String()),
  refresh_grace_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'This client\'s refresh grace window (default: refreshGraceSeconds)' }))
}, { additionalProperties: false })

/** The JSON-shaped part of the options; objects (store, provider, clock) are checked separately. */
export const OptionsSchema = Type.Object({
  issuer: Type.String({ minLength: 1, description: 'Issuer identifier: https URL, no query, no fragment, no trailing slash' }),
  resources: Type.Array(Type.Union([Type.String({ minLength: 1 }), ResourceSchema]), { minItems: 1 }),
  scopes: Type.Optional(Type.Array(ScopeToken, { minItems: 1, description: 'Scopes this server grants' })),
  defaultScopes: Type.Optional(Type.Array(ScopeToken, { description: 'Granted when a client asks for none' })),
  ttl: Type.Optional(Type.Object({
    accessToken: Seconds(3600, 'access token lifetime'),
    refreshToken: Seconds(30 * 86400, 'refresh token idle lifetime (each rotation starts it anew)'),
    grant: Seconds(90 * 86400, 'absolute lifetime of a grant and its refresh family'),
    code: Seconds(60, 'authorization code lifetime'),
    flow: Seconds(600, 'time a user has to consent and log in upstream')
  }, { additionalProperties: false })),
  serviceDocumentation: Type.Optional(Type.String()),
  clients: Type.Optional(Type.Array(StaticClientSchema, { description: 'Clients registered at start-up' })),
  registration: Type.Optional(Type.Object({
    mode: Type.Union([Type.Literal('off'), Type.Literal('public'), Type.Literal('token')], { default: 'off' }),
    token: Type.Optional(Type.String({ minLength: 32, description: 'Initial access token for mode "token"' })),
    allowPublicClients: Type.Optional(Type.Boolean({ description: 'Allow token_endpoint_auth_method "none"' })),
    maxClientsPerIp: Type.Optional(Type.Integer({ minimum: 0, description: 'Live dynamic clients one address may hold; 0 = no cap' })),
    unusedClientTtlSeconds: Type.Optional(Type.Integer({ minimum: 0, description: 'Remove dynamic clients this long after registration or last use (never while a token of theirs is alive); 0 = never' })),
    trustedSchemes: Type.Optional(Type.Array(Type.String({ pattern: '^[a-z][a-z0-9+.-]*$' }), {
      description: 'In mode "token": clients whose redirect URIs all use one of these schemes may register without the token'
    }))
  }, { additionalProperties: false })),
  redirects: Type.Optional(Type.Object({
    allowHttp: Type.Optional(Type.Boolean({ description: 'http redirects on non-loopback hosts (development only)' })),
    allowPrivateHosts: Type.Optional(Type.Boolean({ description: 'https redirects to private / link-local addresses' })),
    customSchemes: Type.Optional(Type.Array(Type.String({ pattern: '^([a-z][a-z0-9+.-]*|\\*\\.\\*)$' }), {
      description: 'Allowed private-use schemes for native apps; "*.*" = any reverse-domain scheme'
    }))
  }, { additionalProperties: false })),
  pkce: Type.Optional(Type.Object({
    required: Type.Optional(Type.Boolean({ default: true })),
    allowPlain: Type.Optional(Type.Boolean({ default: false }))
  }, { additionalProperties: false })),
  consent: Type.Optional(Type.Object({
    title: Type.Optional(Type.String({ maxLength: 100 })),
    accentColor: Type.Optional(Type.String({ pattern: '^#[0-9A-Fa-f]{3,8}$' })),
    logoUrl: Type.Optional(Type.String({ maxLength: 2000 })),
    rememberDays: Type.Optional(Type.Integer({ minimum: 0, maximum: 365 })),
    rememberNativeClients: Type.Optional(Type.Boolean({ default: false, description: 'Let a remembered approval skip the consent page for public native clients (loopback or private-use scheme redirect)' }))
  }, { additionalProperties: false })),
  secret: Type.Optional(Type.String({ minLength: 32, description: 'The deployment secret: signs consent cookies and keys refresh-token derivation and user pseudonyms; the same on every replica, never in the store' })),
  cookieSecret: Type.Optional(Type.String({ minLength: 32, description: 'Former name of `secret` (still accepted)' })),
  encryption: Type.Optional(Type.Object({
    keys: Type.Array(Type.Object({ id: Type.String(), key: Type.String() }, { additionalProperties: false }), { minItems: 1 })
  }, { additionalProperties: false })),
  upstreamTimeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 120_000 })),
  introspection: Type.Optional(Type.Object({
    resourceServers: Type.Optional(Type.Array(Type.Object({
      id: Type.String({ minLength: 1, maxLength: 255 }),
      secret: Type.String({ minLength: 32 })
    }, { additionalProperties: false })))
  }, { additionalProperties: false })),
  upstreamRefreshThresholdSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400, description: 'Refresh upstream tokens this close to expiry' })),
  upstreamRecheckSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 86400, description: 'On a refresh, re-check the user upstream once the last check is this old; 0 = never' })),
  clientIdMetadataDocuments: Type.Optional(Type.Object({
    enabled: Type.Optional(Type.Boolean({ default: true })),
    timeoutMs: Type.Optional(Type.Integer({ minimum: 100, maximum: 30_000 })),
    minCacheSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 86400 })),
    maxCacheSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 7 * 86400 })),
    maxConcurrentFetches: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Documents fetched at once; a request needing one more gets 503 temporarily_unavailable' })),
    failureCacheSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'A failed fetch is answered from memory this long; 0 = fetch again every time' })),
    allowPrivateAddresses: Type.Optional(Type.Boolean({ description: 'TESTS ONLY: fetch documents from private/loopback addresses' }))
  }, { additionalProperties: false })),
  rateLimit: Type.Optional(Type.Object({
    enabled: Type.Optional(Type.Boolean({ default: true })),
    metadata: Type.Optional(Budget),
    authorize: Type.Optional(Budget),
    token: Type.Optional(Budget),
    register: Type.Optional(Budget),
    revocation: Type.Optional(Budget),
    mcp: Type.Optional(Budget)
  }, { additionalProperties: false })),
  cors: Type.Optional(Type.Object({
    origins: Type.Union([Type.Array(Type.String({ minLength: 1 })), Type.Literal('*')]),
    credentials: Type.Optional(Type.Boolean())
  }, { additionalProperties: false })),
  clockSkewSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 300, description: 'Access tokens stay valid this long past expiry (replica clocks differ)' })),
  refreshGraceSeconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'Window in which a repeated refresh gets the same successor pair; 0 = off' })),
  refreshGraceMaxReplays: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'Replays one retired refresh token may get within the window; past it, reuse' }))
}, { additionalProperties: false })

export type DataOptions = Static<typeof OptionsSchema>
export type ResourceOption = Static<typeof ResourceSchema>

export type StaticClient = Static<typeof StaticClientSchema>

export interface McpOAuthOptions extends DataOptions {
  /** The upstream identity provider (googleProvider(), oidcProvider(), githubProvider(), or your own). */
  provider?: Provider
  /** Storage for tokens, clients and flows. Default: a MemoryStore owned by the plugin. */
  store?: Store
  /** Clock in epoch ms; tests inject one. Default Date.now. */
  now?: () => number
  /** Where audit events go. Default: the Fastify logger (user ids hashed). */
  auditSink?: AuditSink
  /** TESTS ONLY: DNS lookup and trusted CA for client ID metadata document fetches. */
  cimdTestHooks?: Pick<CimdResolverOptions, 'lookup' | 'ca'>
  /** Prometheus metrics (off by default); validated by lib/telemetry/options.ts. */
  metrics?: MetricsOptions
  /** OpenTelemetry spans (on by default, a no-op until an SDK is registered); `false` removes them. */
  tracing?: boolean | TracingOptions
}

export interface ResolvedResource {
  /** The identifier exactly as clients use it and as audience of its tokens. */
  resource: string
  scopes: string[]
  name?: string
  documentation?: string
  /** Path of its RFC 9728 document on this server (path-inserted form). */
  metadataPath: string
  /** Absolute URL of that document, as put in WWW-Authenticate. */
  metadataUrl: string
}

export interface ResolvedConfig {
  issuer: string
  /** Path part of the issuer ('' for an issuer without a path). Routes are registered under it. */
  basePath: string
  origin: string
  endpoints: {
    authorization: string
    token: string
    callback: string
    revocation: string
    introspection: string
  }
  /** Where RFC 8414 metadata is served (path-inserted first). */
  asMetadataPaths: string[]
  resources: ResolvedResource[]
  scopes: string[]
  defaultScopes: string[]
  ttl: { accessToken: number, refreshToken: number, grant: number, code: number, flow: number }
  serviceDocumentation?: string
  clients: StaticClient[]
  registration: {
    mode: 'off' | 'public' | 'token'
    token?: string
    allowPublicClients: boolean
    trustedSchemes: string[]
    maxClientsPerIp: number
    unusedClientTtlSeconds: number
  }
  redirects: RedirectPolicy
  pkce: { required: boolean, allowPlain: boolean }
  consent: { title: string, accentColor: string, logoUrl?: string, rememberDays: number, rememberNativeClients: boolean }
  /** The deployment secret (`secret`, or its former name `cookieSecret`); see DeploymentKeys. */
  secret?: string
  /** Cookies get the __Host- prefix and Secure when the issuer is https. */
  secureCookies: boolean
  encryptionKeys: Array<{ id: string, key: string }>
  upstreamTimeoutMs: number
  refreshGraceSeconds: number
  refreshGraceMaxReplays: number
  clockSkewSeconds: number
  rateLimits: { enabled: boolean } & Record<RateLimitName, { max: number, windowSeconds: number }>
  cors: { origins: string[] | '*', credentials: boolean } | null
  /** Send Strict-Transport-Security (issuer is https). */
  hsts: boolean
  cimd: { enabled: boolean, timeoutMs: number, minCacheSeconds: number, maxCacheSeconds: number, maxConcurrentFetches: number, failureCacheSeconds: number, allowPrivateAddresses: boolean }
  introspection: { resourceServers: Array<{ id: string, secret: string }> }
  upstreamRefreshThresholdSeconds: number
  upstreamRecheckSeconds: number
  /** Settings that weaken security, each a sentence for the start-up log. */
  warnings: string[]
}

const checkOptions = Compile(OptionsSchema)

/** A grace window longer than this (s) is logged as weakened: well above the default, sized to real clients. */
const GRACE_WARN_ABOVE = 600

export const PROTECTED_RESOURCE_WELL_KNOWN = '/.well-known/oauth-protected-resource'
export const AUTHORIZATION_SERVER_WELL_KNOWN = '/.well-known/oauth-authorization-server'

function bad (field: string, message: string): Error {
  return new errors.INVALID_OPTION(field, message)
}

/** Validate the options and derive every URL the plugin will serve or print. Throws naming the field. */
export function resolveOptions (opts: unknown): ResolvedConfig {
  if (opts === null || typeof opts !== 'object') throw bad('(root)', 'options must be an object')
  const { store, now, provider, auditSink, cimdTestHooks: _hooks, metrics: _metrics, tracing: _tracing, ...data } = opts as McpOAuthOptions
  if (auditSink !== undefined && typeof auditSink !== 'function') throw bad('auditSink', 'must be a function (event, fields) => void')
  if (store !== undefined) checkStore(store)
  if (provider !== undefined) checkProvider(provider)
  if (now !== undefined && typeof now !== 'function') throw bad('now', 'must be a function returning epoch milliseconds')

  if (!checkOptions.Check(data)) {
    const first = [...checkOptions.Errors(data)].find(e => e.keyword !== 'boolean') ?? [...checkOptions.Errors(data)][0]
    const field = first ? fieldName(first.instancePath, first.params) : '(root)'
    throw bad(field, first?.keyword === 'required' ? 'is required' : (first?.message ?? 'invalid'))
  }

  const warnings: string[] = []
  const issuerUrl = parseUrl('issuer', data.issuer)
  if (issuerUrl.search !== '' || data.issuer.includes('?')) throw bad('issuer', 'must not have a query (RFC 8414)')
  if (issuerUrl.hash !== '' || data.issuer.includes('#')) throw bad('issuer', 'must not have a fragment (RFC 8414)')
  if (issuerUrl.username !== '' || issuerUrl.password !== '') throw bad('issuer', 'must not contain user information')
  if (data.issuer.endsWith('/')) throw bad('issuer', `must not end with "/": use ${data.issuer.replace(/\/+$/, '')}`)
  if (issuerUrl.href !== data.issuer && issuerUrl.href !== data.issuer + '/') {
    throw bad('issuer', `must be written in canonical form (${issuerUrl.href.replace(/\/$/, '')}): clients compare it character by character`)
  }
  if (issuerUrl.protocol === 'http:' && !isLoopbackHost(issuerUrl.hostname)) {
    warnings.push(`issuer ${data.issuer} is plain http on a non-loopback host: tokens and codes travel in clear text`)
  }

  const basePath = issuerUrl.pathname === '/' ? '' : issuerUrl.pathname
  const origin = issuerUrl.origin
  const scopes = unique(data.scopes ?? ['mcp:tools'])
  const defaultScopes = unique(data.defaultScopes ?? scopes)
  for (const s of defaultScopes) {
    if (!scopes.includes(s)) throw bad('defaultScopes', `"${s}" is not in scopes`)
  }

  const resources: ResolvedResource[] = []
  data.resources.forEach((entry, i) => {
    const r: ResourceOption = typeof entry === 'string' ? { resource: entry } : entry
    const field = `resources[${i}]`
    const url = parseUrl(field, r.resource)
    if (url.hash !== '' || r.resource.includes('#')) throw bad(field, 'a resource indicator must not have a fragment (RFC 8707)')
    if (url.search !== '') throw bad(field, 'a resource indicator should not have a query (RFC 8707)')
    if (url.username !== '' || url.password !== '') throw bad(field, 'must not contain user information')
    if (url.origin !== origin) {
      throw new errors.INCONSISTENT_CONFIG(`resource ${r.resource} is not on the issuer's origin ${origin}; ` +
        'its protected resource metadata must be served by the host that serves the resource')
    }
    const canonical = url.href
    if (resources.some(x => x.resource === canonical)) throw bad(field, `duplicate resource ${canonical}`)
    const suffix = url.pathname === '/' ? '' : url.pathname
    const metadataPath = PROTECTED_RESOURCE_WELL_KNOWN + suffix
    for (const s of r.scopes ?? []) {
      if (!scopes.includes(s)) throw bad(`${field}.scopes`, `"${s}" is not in scopes`)
    }
    const resolved: ResolvedResource = {
      resource: canonical,
      scopes: unique(r.scopes ?? scopes),
      metadataPath,
      metadataUrl: origin + metadataPath
    }
    if (r.name !== undefined) resolved.name = r.name
    if (r.documentation !== undefined) resolved.documentation = parseUrl(`${field}.documentation`, r.documentation).href
    resources.push(resolved)
  })

  const asMetadataPaths = basePath === ''
    ? [AUTHORIZATION_SERVER_WELL_KNOWN]
    : [AUTHORIZATION_SERVER_WELL_KNOWN + basePath, AUTHORIZATION_SERVER_WELL_KNOWN]

  const ttl = {
    accessToken: data.ttl?.accessToken ?? 3600,
    refreshToken: data.ttl?.refreshToken ?? 30 * 86400,
    grant: data.ttl?.grant ?? 90 * 86400,
    code: data.ttl?.code ?? 60,
    flow: data.ttl?.flow ?? 600
  }
  if (ttl.refreshToken > ttl.grant) throw bad('ttl.refreshToken', 'must not be longer than ttl.grant')
  if (ttl.code > 600) warnings.push(`ttl.code is ${ttl.code} s: authorization codes should live a minute or less`)

  const config: ResolvedConfig = {
    issuer: data.issuer,
    basePath,
    origin,
    endpoints: {
      authorization: `${data.issuer}/oauth/authorize`,
      token: `${data.issuer}/oauth/token`,
      callback: `${data.issuer}/oauth/callback`,
      revocation: `${data.issuer}/oauth/revoke`,
      introspection: `${data.issuer}/oauth/introspect`
    },
    asMetadataPaths,
    resources,
    scopes,
    defaultScopes,
    ttl,
    clients: data.clients ?? [],
    registration: {
      mode: data.registration?.mode ?? 'off',
      allowPublicClients: data.registration?.allowPublicClients ?? true,
      trustedSchemes: data.registration?.trustedSchemes ?? [],
      maxClientsPerIp: data.registration?.maxClientsPerIp ?? 0,
      unusedClientTtlSeconds: data.registration?.unusedClientTtlSeconds ?? 30 * 86400,
      ...(data.registration?.token !== undefined ? { token: data.registration.token } : {})
    },
    redirects: {
      allowHttp: data.redirects?.allowHttp ?? false,
      allowPrivateHosts: data.redirects?.allowPrivateHosts ?? false,
      customSchemes: data.redirects?.customSchemes ?? [...DEFAULT_CUSTOM_SCHEMES]
    },
    pkce: { required: data.pkce?.required ?? true, allowPlain: data.pkce?.allowPlain ?? false },
    consent: {
      title: data.consent?.title ?? 'Authorize access',
      accentColor: data.consent?.accentColor ?? '#2f5bd3',
      rememberDays: data.consent?.rememberDays ?? 30,
      rememberNativeClients: data.consent?.rememberNativeClients ?? false,
      ...(data.consent?.logoUrl !== undefined ? { logoUrl: parseUrl('consent.logoUrl', data.consent.logoUrl).href } : {})
    },
    secureCookies: issuerUrl.protocol === 'https:',
    encryptionKeys: data.encryption?.keys ?? [],
    upstreamTimeoutMs: data.upstreamTimeoutMs ?? 10_000,
    // Real clients retry refreshes in bursts of 33-76 s: a shorter window logs their users out.
    refreshGraceSeconds: data.refreshGraceSeconds ?? 60,
    refreshGraceMaxReplays: data.refreshGraceMaxReplays ?? 50,
    clockSkewSeconds: data.clockSkewSeconds ?? 0,
    rateLimits: {
      enabled: data.rateLimit?.enabled ?? true,
      metadata: data.rateLimit?.metadata ?? DEFAULT_RATE_LIMITS.metadata,
      authorize: data.rateLimit?.authorize ?? DEFAULT_RATE_LIMITS.authorize,
      token: data.rateLimit?.token ?? DEFAULT_RATE_LIMITS.token,
      register: data.rateLimit?.register ?? DEFAULT_RATE_LIMITS.register,
      revocation: data.rateLimit?.revocation ?? DEFAULT_RATE_LIMITS.revocation,
      mcp: data.rateLimit?.mcp ?? DEFAULT_RATE_LIMITS.mcp
    },
    cors: data.cors === undefined ? null : { origins: data.cors.origins, credentials: data.cors.credentials ?? false },
    hsts: issuerUrl.protocol === 'https:',
    cimd: {
      enabled: data.clientIdMetadataDocuments?.enabled ?? true,
      timeoutMs: data.clientIdMetadataDocuments?.timeoutMs ?? 5000,
      minCacheSeconds: data.clientIdMetadataDocuments?.minCacheSeconds ?? 60,
      maxCacheSeconds: data.clientIdMetadataDocuments?.maxCacheSeconds ?? 86400,
      maxConcurrentFetches: data.clientIdMetadataDocuments?.maxConcurrentFetches ?? 16,
      failureCacheSeconds: data.clientIdMetadataDocuments?.failureCacheSeconds ?? 30,
      allowPrivateAddresses: data.clientIdMetadataDocuments?.allowPrivateAddresses ?? false
    },
    introspection: { resourceServers: data.introspection?.resourceServers ?? [] },
    upstreamRefreshThresholdSeconds: data.upstreamRefreshThresholdSeconds ?? 300,
    upstreamRecheckSeconds: data.upstreamRecheckSeconds ?? 3600,
    ...(data.secret !== undefined || data.cookieSecret !== undefined ? { secret: (data.secret ?? data.cookieSecret) as string } : {}),
    warnings
  }
  if (config.pkce.allowPlain) warnings.push('pkce.allowPlain is on: the "plain" PKCE method protects nothing against an observer of the authorization request')
  if (!config.pkce.required) warnings.push('pkce.required is off: clients may skip PKCE (OAuth 2.1 requires it)')
  if (config.registration.mode === 'public') warnings.push('registration.mode is "public": anyone can register a client (normal for MCP; keep rate limits on)')
  if (config.registration.mode !== 'off' && config.registration.unusedClientTtlSeconds === 0) warnings.push('registration.unusedClientTtlSeconds is 0: dynamically registered clients are kept forever, however many are registered')
  if (config.registration.mode === 'token' && config.registration.token === undefined) throw bad('registration.token', 'is required when registration.mode is "token"')
  if (config.refreshGraceSeconds === 0) warnings.push('refreshGraceSeconds is 0: a client that retries a refresh after a lost response loses its whole grant')
  if (config.refreshGraceSeconds > GRACE_WARN_ABOVE) warnings.push(`refreshGraceSeconds is ${config.refreshGraceSeconds}: a stolen, already used refresh token stays usable that long`)
  if (config.upstreamRecheckSeconds === 0) warnings.push('upstreamRecheckSeconds is 0: a user disabled or refused at the identity provider keeps access until the grant ends')
  else if (config.upstreamRecheckSeconds > 86400) warnings.push(`upstreamRecheckSeconds is ${config.upstreamRecheckSeconds}: a user disabled at the identity provider keeps access that long after the last check`)
  if (config.consent.rememberNativeClients) warnings.push('consent.rememberNativeClients is on: a remembered approval lets any program on the user\'s device obtain codes for a public native client without the consent page (RFC 8252 §8.6)')
  if (config.redirects.allowHttp) warnings.push('redirects.allowHttp is on: authorization codes may be sent over plain http')
  if (config.redirects.allowPrivateHosts) warnings.push('redirects.allowPrivateHosts is on: clients may redirect to private network addresses')
  if (config.cimd.allowPrivateAddresses) warnings.push('clientIdMetadataDocuments.allowPrivateAddresses is on: client metadata may be fetched from private addresses (SSRF); for tests only')
  if (config.cimd.minCacheSeconds > config.cimd.maxCacheSeconds) throw bad('clientIdMetadataDocuments.minCacheSeconds', 'must not exceed maxCacheSeconds')
  if (!config.rateLimits.enabled) warnings.push('rateLimit.enabled is off: no endpoint is rate limited')
  if (config.cors?.origins === '*') warnings.push('cors.origins is "*": any web page may call the OAuth endpoints from a browser')
  if (config.cors?.origins === '*' && config.cors.credentials) throw bad('cors.credentials', 'cannot be combined with origins "*"')
  if (Array.isArray(config.cors?.origins)) {
    config.cors.origins.forEach((o, i) => {
      let url: URL | undefined
      try { url = new URL(o) } catch {}
      if (url === undefined || url.origin !== o) throw bad(`cors.origins[${i}]`, `"${o}" is not an origin (scheme://host[:port], no path)`)
    })
  }
  if (config.encryptionKeys.length === 0) warnings.push('no encryption key: upstream tokens are stored unencrypted (set encryption.keys)')
  if (data.secret !== undefined && data.cookieSecret !== undefined && data.secret !== data.cookieSecret) throw bad('cookieSecret', 'is the former name of secret: give one of them')
  if (config.secret === undefined) warnings.push('no secret: consent cookies, refresh-token derivation and user pseudonyms use a per-process key (approvals and grace-window replays are lost on restart and do not cross replicas; pseudonyms change at restart)')
  const clientIds = new Set<string>()
  config.clients.forEach((c, i) => {
    if (clientIds.has(c.client_id)) throw bad(`clients[${i}].client_id`, `duplicate client_id "${c.client_id}"`)
    clientIds.add(c.client_id)
    const method = c.token_endpoint_auth_method ?? (c.client_secret === undefined ? 'none' : 'client_secret_basic')
    if (method === 'none' && c.client_secret !== undefined) throw bad(`clients[${i}].client_secret`, 'a public client (token_endpoint_auth_method "none") has no secret')
    if (method !== 'none' && c.client_secret === undefined) throw bad(`clients[${i}].client_secret`, `is required for ${method}`)
    for (const s of c.scope?.split(' ') ?? []) {
      if (!scopes.includes(s)) throw bad(`clients[${i}].scope`, `"${s}" is not in scopes`)
    }
    const grace = c.refresh_grace_seconds
    if (grace !== undefined && grace > GRACE_WARN_ABOVE) warnings.push(`clients[${i}].refresh_grace_seconds is ${grace}: a stolen, already used refresh token of ${c.client_id} stays usable that long`)
    c.redirect_uris.forEach((u, j) => {
      try {
        const url = new URL(u)
        if (url.hash !== '') throw new Error('fragment')
      } catch {
        throw bad(`clients[${i}].redirect_uris[${j}]`, 'must be an absolute URL without a fragment')
      }
    })
  })
  if (data.serviceDocumentation !== undefined) config.serviceDocumentation = parseUrl('serviceDocumentation', data.serviceDocumentation).href
  return config
}

function parseUrl (field: string, value: string): URL {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw bad(field, `"${value}" is not an absolute URL`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw bad(field, `"${value}" must be an http(s) URL`)
  return url
}

function fieldName (instancePath: string, params: unknown): string {
  const path = instancePath.replace(/^\//, '').split('/').filter(Boolean)
    .map(p => /^\d+$/.test(p) ? `[${p}]` : `.${p}`).join('').replace(/^\./, '')
  const extra = params as { additionalProperties?: string[], requiredProperties?: string[] } | undefined
  const named = extra?.additionalProperties?.[0] ?? extra?.requiredProperties?.[0]
  if (named !== undefined) return path === '' ? named : `${path}.${named}`
  return path === '' ? '(root)' : path
}

function checkProvider (provider: unknown): void {
  if (provider === null || typeof provider !== 'object') throw bad('provider', 'must be a Provider (googleProvider(), oidcProvider(), ...)')
  const p = provider as Record<string, unknown>
  if (typeof p.name !== 'string' || p.name === '') throw bad('provider', 'must have a name')
  const missing = ['authorizationUrl', 'exchangeCode', 'refresh'].filter(m => typeof p[m] !== 'function')
  if (missing.length > 0) throw bad('provider', `does not implement ${missing.join(', ')}`)
}

function checkStore (store: unknown): void {
  if (store === null || typeof store !== 'object') throw bad('store', 'must be an object implementing the storage contract')
  const missing = STORE_METHODS.filter(m => typeof (store as Record<string, unknown>)[m] !== 'function')
  if (missing.length > 0) throw bad('store', `does not implement ${missing.join(', ')}`)
}

export function isLoopbackHost (hostname: string): boolean {
  const h = hostname.toLowerCase()
  return h === 'localhost' || h === '[::1]' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h)
}

function unique (values: string[]): string[] {
  return [...new Set(values)]
}
