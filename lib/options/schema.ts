import Type, { type Static, type TObject, type TOptional, type TSchema } from 'typebox'
import type { Store } from '../storage/contract.js'
import type { Provider } from '../providers/types.js'
import type { AuditSink } from '../security/audit.js'
import type { MetricsOptions, TracingOptions } from '../telemetry/options.js'
import { DEFAULT_CUSTOM_SCHEMES } from '../oauth/redirect.js'
import { JWT_BEARER_GRANT } from '../oauth/jwt.js'

/**
 * A field users may leave out. Its default is written here and nowhere else: resolveOptions
 * applies it with Value.Default, and the type keeps it, so Filled<> knows the field is then present.
 */
function Defaulted<T extends TSchema> (type: T, value: Static<T>): TOptional<T> & { default: Static<T> } {
  // Optional() returns a copy, so a schema used twice (Budget) keeps one default per use.
  return Object.assign(Type.Optional(type), { default: value }) as TOptional<T> & { default: Static<T> }
}

/** The static type of a schema once Value.Default has run: every field with a default is present. */
export type Filled<S extends TSchema> = S extends TObject<infer P>
  ? { [K in keyof P as P[K] extends TOptional<TSchema> ? never : K]: Filled<P[K]> } &
    { [K in keyof P as P[K] extends { default: unknown } ? K : never]-?: Filled<P[K]> } &
    { [K in keyof P as P[K] extends TOptional<TSchema> ? (P[K] extends { default: unknown } ? never : K) : never]?: Filled<P[K]> }
  : Static<S>

const Seconds = (def: number, description: string) =>
  Defaulted(Type.Integer({ minimum: 1, maximum: 31_536_000 * 5, description }), def)

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

const StaticClientSchema = Type.Object({
  client_id: Type.String({ minLength: 1, maxLength: 255 }),
  client_secret: Type.Optional(Type.String({ minLength: 16 })),
  redirect_uris: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { minItems: 1, description: 'Required with authorization_code' })),
  grant_types: Type.Optional(Type.Array(Type.Union([
    Type.Literal('authorization_code'), Type.Literal('refresh_token'), Type.Literal('client_credentials'), Type.Literal(JWT_BEARER_GRANT)
  ]), { minItems: 1, description: 'Default ["authorization_code", "refresh_token"]; client_credentials and the jwt-bearer grant need a client_secret' })),
  client_name: Type.Optional(Type.String({ maxLength: 200 })),
  token_endpoint_auth_method: Type.Optional(Type.Union([
    Type.Literal('none'), Type.Literal('client_secret_basic'), Type.Literal('client_secret_post'), Type.Literal('private_key_jwt')
  ])),
  // private_key_jwt (RFC 7523 §2.2): exactly one of the two; the set is checked in resolve.ts.
  jwks: Type.Optional(Type.Unknown({ description: 'The client\'s public keys (a JWK Set), for private_key_jwt' })),
  jwks_uri: Type.Optional(Type.String({ minLength: 1, description: 'An https URL serving the client\'s public keys, for private_key_jwt' })),
  scope: Type.Optional(Type.String()),
  refresh_grace_seconds: Type.Optional(Type.Integer({ minimum: 0, maximum: 3600, description: 'This client\'s refresh grace window (default: refreshGraceSeconds)' }))
}, { additionalProperties: false })

/** The JSON-shaped part of the options, with every default; objects (store, provider, clock) are checked separately. */
export const OptionsSchema = Type.Object({
  issuer: Type.String({ minLength: 1, description: 'Issuer identifier: https URL, no query, no fragment, no trailing slash' }),
  resources: Type.Array(Type.Union([Type.String({ minLength: 1 }), ResourceSchema]), { minItems: 1 }),
  scopes: Defaulted(Type.Array(ScopeToken, { minItems: 1, description: 'Scopes this server grants' }), ['mcp:tools']),
  defaultScopes: Type.Optional(Type.Array(ScopeToken, { description: 'Granted when a client asks for none (default: all scopes)' })),
  ttl: Defaulted(Type.Object({
    accessToken: Seconds(3600, 'access token lifetime'),
    refreshToken: Seconds(30 * 86400, 'refresh token idle lifetime (each rotation starts it anew)'),
    grant: Seconds(90 * 86400, 'absolute lifetime of a grant and its refresh family'),
    code: Seconds(60, 'authorization code lifetime'),
    flow: Seconds(600, 'time a user has to consent and log in upstream')
  }, { additionalProperties: false }), {}),
  serviceDocumentation: Type.Optional(Type.String()),
  clients: Defaulted(Type.Array(StaticClientSchema, { description: 'Clients registered at start-up' }), []),
  // `mode` is required once `registration` is given; without the section, registration is off.
  registration: Defaulted(Type.Object({
    mode: Type.Union([Type.Literal('off'), Type.Literal('public'), Type.Literal('token')]),
    token: Type.Optional(Type.String({ minLength: 32, description: 'Initial access token for mode "token"' })),
    allowPublicClients: Defaulted(Type.Boolean({ description: 'Allow token_endpoint_auth_method "none"' }), true),
    maxClientsPerIp: Defaulted(Type.Integer({ minimum: 0, description: 'Live dynamic clients one address may hold; 0 = no cap' }), 0),
    unusedClientTtlSeconds: Defaulted(Type.Integer({ minimum: 0, description: 'Remove dynamic clients this long after registration or last use (never while a token of theirs is alive); 0 = never' }), 30 * 86400),
    trustedSchemes: Defaulted(Type.Array(Type.String({ pattern: '^[a-z][a-z0-9+.-]*$' }), {
      description: 'In mode "token": clients whose redirect URIs all use one of these schemes may register without the token'
    }), [])
  }, { additionalProperties: false }), { mode: 'off' }),
  redirects: Defaulted(Type.Object({
    allowHttp: Defaulted(Type.Boolean({ description: 'http redirects on non-loopback hosts (development only)' }), false),
    allowPrivateHosts: Defaulted(Type.Boolean({ description: 'https redirects to private / link-local addresses' }), false),
    customSchemes: Defaulted(Type.Array(Type.String({ pattern: '^([a-z][a-z0-9+.-]*|\\*\\.\\*)$' }), {
      description: 'Allowed private-use schemes for native apps; "*.*" = any reverse-domain scheme'
    }), [...DEFAULT_CUSTOM_SCHEMES])
  }, { additionalProperties: false }), {}),
  pkce: Defaulted(Type.Object({
    required: Defaulted(Type.Boolean(), true),
    allowPlain: Defaulted(Type.Boolean(), false)
  }, { additionalProperties: false }), {}),
  consent: Defaulted(Type.Object({
    title: Defaulted(Type.String({ maxLength: 100 }), 'Authorize access'),
    accentColor: Defaulted(Type.String({ pattern: '^#[0-9A-Fa-f]{3,8}$' }), '#2f5bd3'),
    logoUrl: Type.Optional(Type.String({ maxLength: 2000 })),
    rememberDays: Defaulted(Type.Integer({ minimum: 0, maximum: 365 }), 30),
    rememberNativeClients: Defaulted(Type.Boolean({ description: 'Let a remembered approval skip the consent page for public native clients (loopback or private-use scheme redirect)' }), false)
  }, { additionalProperties: false }), {}),
  secret: Type.Optional(Type.String({ minLength: 32, description: 'The deployment secret: signs consent cookies and keys refresh-token derivation and user pseudonyms; the same on every replica, never in the store' })),
  cookieSecret: Type.Optional(Type.String({ minLength: 32, description: 'Former name of `secret` (still accepted)' })),
  encryption: Type.Optional(Type.Object({
    keys: Type.Array(Type.Object({ id: Type.String(), key: Type.String() }, { additionalProperties: false }), { minItems: 1 })
  }, { additionalProperties: false })),
  upstreamTimeoutMs: Defaulted(Type.Integer({ minimum: 100, maximum: 120_000 }), 10_000),
  introspection: Defaulted(Type.Object({
    resourceServers: Defaulted(Type.Array(Type.Object({
      id: Type.String({ minLength: 1, maxLength: 255 }),
      secret: Type.String({ minLength: 32 })
    }, { additionalProperties: false })), [])
  }, { additionalProperties: false }), {}),
  upstreamRefreshThresholdSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 86400, description: 'Refresh upstream tokens this close to expiry' }), 300),
  upstreamRecheckSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 7 * 86400, description: 'On a refresh, re-check the user upstream once the last check is this old; 0 = never' }), 3600),
  clientIdMetadataDocuments: Defaulted(Type.Object({
    enabled: Defaulted(Type.Boolean(), true),
    timeoutMs: Defaulted(Type.Integer({ minimum: 100, maximum: 30_000 }), 5000),
    minCacheSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 86400 }), 60),
    maxCacheSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 7 * 86400 }), 86400),
    maxConcurrentFetches: Defaulted(Type.Integer({ minimum: 1, maximum: 1000, description: 'Documents fetched at once; a request needing one more gets 503 temporarily_unavailable' }), 16),
    failureCacheSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 3600, description: 'A failed fetch is answered from memory this long; 0 = fetch again every time' }), 30),
    allowPrivateAddresses: Defaulted(Type.Boolean({ description: 'TESTS ONLY: fetch documents from private/loopback addresses' }), false)
  }, { additionalProperties: false }), {}),
  // Budgets generous enough for hosted clients (claude.ai, ChatGPT) whose users share egress IPs.
  rateLimit: Defaulted(Type.Object({
    enabled: Defaulted(Type.Boolean(), true),
    metadata: Defaulted(Budget, { max: 600, windowSeconds: 60 }),
    authorize: Defaulted(Budget, { max: 120, windowSeconds: 60 }),
    token: Defaulted(Budget, { max: 300, windowSeconds: 60 }),
    register: Defaulted(Budget, { max: 300, windowSeconds: 3600 }),
    revocation: Defaulted(Budget, { max: 300, windowSeconds: 60 }),
    mcp: Defaulted(Budget, { max: 600, windowSeconds: 60 })
  }, { additionalProperties: false }), {}),
  cors: Type.Optional(Type.Object({
    origins: Type.Union([Type.Array(Type.String({ minLength: 1 })), Type.Literal('*')]),
    credentials: Defaulted(Type.Boolean(), false)
  }, { additionalProperties: false })),
  // Enterprise-Managed Authorization (the jwt-bearer grant with ID-JAGs): whose assertions are trusted.
  enterprise: Defaulted(Type.Object({
    trustedIssuers: Defaulted(Type.Array(Type.Object({
      issuer: Type.String({ minLength: 1, maxLength: 2000, description: 'The IdP\'s issuer, exactly as its ID-JAGs carry it in `iss`' }),
      jwks_uri: Type.Optional(Type.String({ minLength: 1, maxLength: 2000, description: 'Its signing keys; discovered from its metadata when absent' }))
    }, { additionalProperties: false }), { maxItems: 100, description: 'Identity providers whose ID-JAGs are accepted' }), []),
    trustUpstreamIssuer: Defaulted(Type.Boolean({ description: 'Also trust the upstream OpenID Connect provider\'s own issuer (its `sub` is the login\'s user id)' }), true),
    allowPrivateAddresses: Defaulted(Type.Boolean({ description: 'Fetch IdP metadata and keys from private addresses (an IdP inside your network); loopback http issuers are always allowed' }), false),
    timeoutMs: Defaulted(Type.Integer({ minimum: 100, maximum: 30_000, description: 'Bound for one fetch of IdP metadata or keys' }), 5000)
  }, { additionalProperties: false }), {}),
  clockSkewSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 300, description: 'Access tokens stay valid this long past expiry (replica clocks differ)' }), 0),
  // Real clients retry refreshes in bursts of 33-76 s: a shorter window logs their users out.
  refreshGraceSeconds: Defaulted(Type.Integer({ minimum: 0, maximum: 3600, description: 'Window in which a repeated refresh gets the same successor pair; 0 = off' }), 60),
  refreshGraceMaxReplays: Defaulted(Type.Integer({ minimum: 1, maximum: 1000, description: 'Replays one retired refresh token may get within the window; past it, reuse' }), 50)
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
  /**
   * TESTS ONLY: DNS lookup and trusted CA for client ID metadata document fetches. Spelled out
   * here rather than taken from lib/clients, which sits above the options.
   */
  cimdTestHooks?: {
    lookup?: (hostname: string) => Promise<Array<{ address: string, family: 4 | 6 }>>
    ca?: string | Buffer | Array<string | Buffer>
  }
  /** Prometheus metrics (off by default); validated by lib/telemetry/options.ts. */
  metrics?: MetricsOptions
  /** OpenTelemetry spans (on by default, a no-op until an SDK is registered); `false` removes them. */
  tracing?: boolean | TracingOptions
}
