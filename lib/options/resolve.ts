import { Compile } from 'typebox/compile'
import { Value } from 'typebox/value'
import { errors } from '../errors.js'
import { STORE_METHODS } from '../storage/contract.js'
import { publicKeySetProblem } from '../security/jwks.js'
import { resolveTelemetryOptions } from '../telemetry/options.js'
import { AUTHORIZATION_SERVER_WELL_KNOWN, PROTECTED_RESOURCE_WELL_KNOWN, type ResolvedConfig, type ResolvedResource, type ResolvedStaticClient, type TrustedIssuer } from './config.js'
import { OptionsSchema, type Filled, type McpOAuthOptions, type ResourceOption } from './schema.js'
import { startupWarnings } from './warnings.js'
import { isLoopbackHost } from '../providers/oidc.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'
import type { Provider } from '../providers/types.js'

const checkOptions = Compile(OptionsSchema)

function bad (field: string, message: string): Error {
  return new errors.INVALID_OPTION(field, message)
}

/**
 * The one resolve step: validate the options, fill in the schema's defaults, derive every URL the
 * plugin will serve or print, and list the start-up warnings. Throws naming the bad field.
 */
export function resolveOptions (opts: unknown): ResolvedConfig {
  if (opts === null || typeof opts !== 'object') throw bad('(root)', 'options must be an object')
  const { store, now, provider, auditSink, cimdTestHooks: _hooks, metrics, tracing, ...input } = opts as McpOAuthOptions
  if (auditSink !== undefined && typeof auditSink !== 'function') throw bad('auditSink', 'must be a function (event, fields) => void')
  if (store !== undefined) checkStore(store)
  if (provider !== undefined) checkProvider(provider)
  if (now !== undefined && typeof now !== 'function') throw bad('now', 'must be a function returning epoch milliseconds')

  // Validated as given, before defaults: a section that is present must be complete (registration.mode).
  if (!checkOptions.Check(input)) {
    const first = [...checkOptions.Errors(input)].find(e => e.keyword !== 'boolean') ?? [...checkOptions.Errors(input)][0]
    const field = first ? fieldName(first.instancePath, first.params) : '(root)'
    throw bad(field, first?.keyword === 'required' ? 'is required' : (first?.message ?? 'invalid'))
  }
  // Value.Default writes into its argument: a copy, so the caller's options stay as they were given.
  const data = Value.Default(OptionsSchema, Value.Clone(input)) as Filled<typeof OptionsSchema>

  const issuerUrl = parseUrl('issuer', data.issuer)
  if (issuerUrl.search !== '' || data.issuer.includes('?')) throw bad('issuer', 'must not have a query (RFC 8414)')
  if (issuerUrl.hash !== '' || data.issuer.includes('#')) throw bad('issuer', 'must not have a fragment (RFC 8414)')
  if (issuerUrl.username !== '' || issuerUrl.password !== '') throw bad('issuer', 'must not contain user information')
  if (data.issuer.endsWith('/')) throw bad('issuer', `must not end with "/": use ${data.issuer.replace(/\/+$/, '')}`)
  if (issuerUrl.href !== data.issuer && issuerUrl.href !== data.issuer + '/') {
    throw bad('issuer', `must be written in canonical form (${issuerUrl.href.replace(/\/$/, '')}): clients compare it character by character`)
  }

  const basePath = issuerUrl.pathname === '/' ? '' : issuerUrl.pathname
  const origin = issuerUrl.origin
  const scopes = unique(data.scopes)
  // Not a schema default: without defaultScopes, a client asking for none gets every scope.
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

  const { ttl, registration, consent, cors } = data
  if (ttl.refreshToken > ttl.grant) throw bad('ttl.refreshToken', 'must not be longer than ttl.grant')
  const logoUrl = consent.logoUrl === undefined ? undefined : parseUrl('consent.logoUrl', consent.logoUrl).href
  if (registration.mode === 'token' && registration.token === undefined) throw bad('registration.token', 'is required when registration.mode is "token"')
  const cimd = data.clientIdMetadataDocuments
  if (cimd.minCacheSeconds > cimd.maxCacheSeconds) throw bad('clientIdMetadataDocuments.minCacheSeconds', 'must not exceed maxCacheSeconds')
  if (cors?.origins === '*' && cors.credentials) throw bad('cors.credentials', 'cannot be combined with origins "*"')
  if (Array.isArray(cors?.origins)) {
    cors.origins.forEach((o, i) => {
      let url: URL | undefined
      try { url = new URL(o) } catch {}
      if (url === undefined || url.origin !== o) throw bad(`cors.origins[${i}]`, `"${o}" is not an origin (scheme://host[:port], no path)`)
    })
  }
  if (data.secret !== undefined && data.cookieSecret !== undefined && data.secret !== data.cookieSecret) throw bad('cookieSecret', 'is the former name of secret: give one of them')
  const clients = resolveClients(data.clients, scopes)
  const serviceDocumentation = data.serviceDocumentation === undefined ? undefined : parseUrl('serviceDocumentation', data.serviceDocumentation).href
  const telemetry = resolveTelemetryOptions({ metrics, tracing })
  const enterprise = resolveEnterprise(data.enterprise, provider)
  const idJagClient = clients.findIndex(c => c.grant_types.includes(JWT_BEARER_GRANT))
  if (idJagClient >= 0 && enterprise.issuers.length === 0) {
    throw bad(`clients[${idJagClient}].grant_types`, `${JWT_BEARER_GRANT} needs a trusted identity provider: enterprise.trustedIssuers, or an OpenID Connect provider`)
  }

  const config: Omit<ResolvedConfig, 'warnings'> = {
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
    clients,
    registration,
    redirects: data.redirects,
    pkce: data.pkce,
    consent: logoUrl === undefined ? consent : { ...consent, logoUrl },
    secureCookies: issuerUrl.protocol === 'https:',
    encryptionKeys: data.encryption?.keys ?? [],
    upstreamTimeoutMs: data.upstreamTimeoutMs,
    refreshGraceSeconds: data.refreshGraceSeconds,
    refreshGraceMaxReplays: data.refreshGraceMaxReplays,
    clockSkewSeconds: data.clockSkewSeconds,
    rateLimits: data.rateLimit,
    cors: cors ?? null,
    hsts: issuerUrl.protocol === 'https:',
    cimd,
    introspection: data.introspection,
    upstreamRefreshThresholdSeconds: data.upstreamRefreshThresholdSeconds,
    upstreamRecheckSeconds: data.upstreamRecheckSeconds,
    enterprise,
    ...(data.secret !== undefined || data.cookieSecret !== undefined ? { secret: (data.secret ?? data.cookieSecret) as string } : {}),
    ...(serviceDocumentation !== undefined ? { serviceDocumentation } : {}),
    telemetry
  }
  return { ...config, warnings: startupWarnings({ config, hasProvider: provider !== undefined }) }
}

function resolveClients (clients: Filled<typeof OptionsSchema>['clients'], scopes: string[]): ResolvedStaticClient[] {
  const clientIds = new Set<string>()
  return clients.map((c, i) => {
    if (clientIds.has(c.client_id)) throw bad(`clients[${i}].client_id`, `duplicate client_id "${c.client_id}"`)
    clientIds.add(c.client_id)
    const method = c.token_endpoint_auth_method ?? (c.client_secret === undefined ? 'none' : 'client_secret_basic')
    if (method === 'none' && c.client_secret !== undefined) throw bad(`clients[${i}].client_secret`, 'a public client (token_endpoint_auth_method "none") has no secret')
    if (method === 'private_key_jwt') checkClientKeys(c, `clients[${i}]`)
    else if (c.jwks !== undefined || c.jwks_uri !== undefined) {
      throw bad(`clients[${i}].${c.jwks !== undefined ? 'jwks' : 'jwks_uri'}`, 'is used by token_endpoint_auth_method "private_key_jwt" only')
    } else if (method !== 'none' && c.client_secret === undefined) throw bad(`clients[${i}].client_secret`, `is required for ${method}`)
    for (const s of c.scope?.split(' ') ?? []) {
      if (!scopes.includes(s)) throw bad(`clients[${i}].scope`, `"${s}" is not in scopes`)
    }
    const given = c.grant_types ?? ['authorization_code']
    const browser = given.includes('authorization_code')
    if (given.includes('client_credentials') && method === 'none') {
      throw bad(`clients[${i}].client_secret`, 'is required for client_credentials (a machine client proves who it is with it), unless it uses private_key_jwt')
    }
    if (given.includes(JWT_BEARER_GRANT) && c.client_secret === undefined) {
      throw bad(`clients[${i}].client_secret`, `is required for ${JWT_BEARER_GRANT} (Enterprise-Managed Authorization is for confidential clients)`)
    }
    if (given.includes('refresh_token') && !browser) throw bad(`clients[${i}].grant_types`, 'refresh_token comes only with authorization_code')
    // The authorization code flow needs somewhere to send the code; a machine client has nowhere.
    if (browser && c.redirect_uris === undefined) throw bad(`clients[${i}].redirect_uris`, 'is required for authorization_code')
    if (!browser && c.redirect_uris !== undefined) throw bad(`clients[${i}].redirect_uris`, 'is only for authorization_code, which this client does not use')
    const redirectUris = c.redirect_uris ?? []
    redirectUris.forEach((u, j) => {
      let url: URL | undefined
      try { url = new URL(u) } catch {}
      if (url === undefined || url.hash !== '') throw bad(`clients[${i}].redirect_uris[${j}]`, 'must be an absolute URL without a fragment')
    })
    // Every code exchange returns a refresh token, so a client of the code flow is registered for using it.
    const grantTypes = unique(browser ? [...given, 'refresh_token'] : given) as ResolvedStaticClient['grant_types']
    return { ...c, grant_types: grantTypes, redirect_uris: redirectUris }
  })
}

/** A private_key_jwt client: no secret, and exactly one key source (public keys, or an https URL). */
function checkClientKeys (c: Filled<typeof OptionsSchema>['clients'][number], field: string): void {
  if (c.client_secret !== undefined) throw bad(`${field}.client_secret`, 'a private_key_jwt client has no secret')
  if ((c.jwks === undefined) === (c.jwks_uri === undefined)) throw bad(field, 'a private_key_jwt client needs exactly one of jwks and jwks_uri')
  if (c.jwks_uri !== undefined && parseUrl(`${field}.jwks_uri`, c.jwks_uri).protocol !== 'https:') throw bad(`${field}.jwks_uri`, 'must be an https URL')
  const problem = c.jwks === undefined ? undefined : publicKeySetProblem(c.jwks)
  if (problem !== undefined) throw bad(`${field}.jwks`, problem)
}

/**
 * The trusted ID-JAG issuers: those listed, and the upstream provider's own issuer unless turned off.
 * Operator-configured URLs, so plain http is allowed on loopback (a development IdP), as for providers.
 */
function resolveEnterprise (input: Filled<typeof OptionsSchema>['enterprise'], provider: Provider | undefined): ResolvedConfig['enterprise'] {
  const issuers: TrustedIssuer[] = []
  input.trustedIssuers.forEach((entry, i) => {
    const field = `enterprise.trustedIssuers[${i}]`
    idpUrl(`${field}.issuer`, entry.issuer)
    if (issuers.some(x => sameIssuer(x.issuer, entry.issuer))) throw bad(`${field}.issuer`, `duplicate issuer ${entry.issuer}`)
    const trusted: TrustedIssuer = { issuer: entry.issuer, upstream: false }
    if (entry.jwks_uri !== undefined) trusted.jwksUri = idpUrl(`${field}.jwks_uri`, entry.jwks_uri).href
    issuers.push(trusted)
  })
  const upstream = provider?.issuer
  // A provider allowed plain http off loopback (allowInsecureHttp) is not trusted for ID-JAGs.
  if (input.trustUpstreamIssuer && typeof upstream === 'string' && acceptableIdpUrl(upstream)) {
    const listed = issuers.find(x => sameIssuer(x.issuer, upstream))
    if (listed !== undefined) listed.upstream = true
    else issuers.push({ issuer: upstream, upstream: true })
  }
  return { issuers, allowPrivateAddresses: input.allowPrivateAddresses, timeoutMs: input.timeoutMs }
}

/** Issuers compare as strings, except that a root issuer may be written with or without its "/". */
function sameIssuer (a: string, b: string): boolean {
  return a === b || a.replace(/\/$/, '') === b.replace(/\/$/, '')
}

/** An identity provider's URL: https, or http on loopback; no query, fragment or user information. */
function idpUrl (field: string, value: string): URL {
  const url = parseUrl(field, value)
  if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) throw bad(field, `"${value}" must use https (http only on loopback)`)
  if (url.search !== '' || url.hash !== '' || value.includes('#')) throw bad(field, 'must not have a query or a fragment')
  if (url.username !== '' || url.password !== '') throw bad(field, 'must not contain user information')
  return url
}

function acceptableIdpUrl (value: string): boolean {
  try {
    idpUrl('provider.issuer', value)
    return true
  } catch {
    return false
  }
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

function unique (values: string[]): string[] {
  return [...new Set(values)]
}
