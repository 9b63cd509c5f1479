import type { RedirectPolicy } from '../oauth/redirect.js'
import type { RateLimitName, ResolvedTelemetryOptions } from '../telemetry/options.js'
import type { StaticClient } from './schema.js'

export const PROTECTED_RESOURCE_WELL_KNOWN = '/.well-known/oauth-protected-resource'
export const AUTHORIZATION_SERVER_WELL_KNOWN = '/.well-known/oauth-authorization-server'

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

/** A client of the `clients` option, with its grant types and redirect URIs spelled out. */
export type ResolvedStaticClient = StaticClient & Required<Pick<StaticClient, 'grant_types' | 'redirect_uris'>>

/** An identity provider whose ID-JAGs are accepted. */
export interface TrustedIssuer {
  /** As its ID-JAGs carry it in `iss`. */
  issuer: string
  /** Its key set; discovered from the issuer's metadata when absent. */
  jwksUri?: string
  /** The upstream provider's issuer: a `sub` is the user id a login gives; other issuers' are namespaced. */
  upstream: boolean
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
  clients: ResolvedStaticClient[]
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
  /** Enterprise-Managed Authorization: the trusted ID-JAG issuers (none: the jwt-bearer grant is off). */
  enterprise: {
    issuers: TrustedIssuer[]
    allowPrivateAddresses: boolean
    timeoutMs: number
  }
  /** Metrics and tracing (`metrics`, `tracing`); null where off. */
  telemetry: ResolvedTelemetryOptions
  /** Settings that weaken security, each a sentence for the start-up log (./warnings.ts). */
  warnings: string[]
}
