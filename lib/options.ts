import Type, { type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import { errors } from './errors.js'
import type { Store } from './storage/types.js'

const Seconds = (def: number, description: string) =>
  Type.Optional(Type.Integer({ minimum: 1, maximum: 31_536_000 * 5, default: def, description }))

const ScopeToken = Type.String({ pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$', maxLength: 128 })

const ResourceSchema = Type.Object({
  resource: Type.String({ minLength: 1, description: 'The URL MCP clients use, e.g. https://mcp.example.com/mcp' }),
  scopes: Type.Optional(Type.Array(ScopeToken, { description: 'scopes_supported of this resource (defaults to all)' })),
  name: Type.Optional(Type.String({ maxLength: 200, description: 'resource_name in its metadata' })),
  documentation: Type.Optional(Type.String({ description: 'resource_documentation URL' }))
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
  serviceDocumentation: Type.Optional(Type.String())
}, { additionalProperties: false })

export type DataOptions = Static<typeof OptionsSchema>
export type ResourceOption = Static<typeof ResourceSchema>

export interface McpOAuthOptions extends DataOptions {
  /** Storage for tokens, clients and flows. Default: a MemoryStore owned by the plugin. */
  store?: Store
  /** Clock in epoch ms; tests inject one. Default Date.now. */
  now?: () => number
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
  }
  /** Where RFC 8414 metadata is served (path-inserted first). */
  asMetadataPaths: string[]
  resources: ResolvedResource[]
  scopes: string[]
  defaultScopes: string[]
  ttl: { accessToken: number, refreshToken: number, grant: number, code: number, flow: number }
  serviceDocumentation?: string
  /** Settings that weaken security, each a sentence for the start-up log. */
  warnings: string[]
}

const checkOptions = Compile(OptionsSchema)

export const PROTECTED_RESOURCE_WELL_KNOWN = '/.well-known/oauth-protected-resource'
export const AUTHORIZATION_SERVER_WELL_KNOWN = '/.well-known/oauth-authorization-server'

function bad (field: string, message: string): Error {
  return new errors.INVALID_OPTION(field, message)
}

/** Validate the options and derive every URL the plugin will serve or print. Throws naming the field. */
export function resolveOptions (opts: unknown): ResolvedConfig {
  if (opts === null || typeof opts !== 'object') throw bad('(root)', 'options must be an object')
  const { store, now, ...data } = opts as McpOAuthOptions
  if (store !== undefined) checkStore(store)
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
      callback: `${data.issuer}/oauth/callback`
    },
    asMetadataPaths,
    resources,
    scopes,
    defaultScopes,
    ttl,
    warnings
  }
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

function checkStore (store: unknown): void {
  const required = ['saveGrant', 'getGrant', 'updateGrantUpstream', 'saveAccessToken', 'getAccessToken',
    'deleteAccessToken', 'saveRefreshToken', 'getRefreshToken', 'rotateRefreshToken', 'revokeGrant',
    'listGrants', 'saveClient', 'getClient', 'deleteClient', 'saveFlow', 'takeFlow', 'saveCode', 'consumeCode']
  if (store === null || typeof store !== 'object') throw bad('store', 'must be an object implementing the storage contract')
  const missing = required.filter(m => typeof (store as Record<string, unknown>)[m] !== 'function')
  if (missing.length > 0) throw bad('store', `does not implement ${missing.join(', ')}`)
}

export function isLoopbackHost (hostname: string): boolean {
  const h = hostname.toLowerCase()
  return h === 'localhost' || h === '[::1]' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h)
}

function unique (values: string[]): string[] {
  return [...new Set(values)]
}
