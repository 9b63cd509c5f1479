import type { ResolvedConfig } from './config.js'
import type { StaticClient } from './schema.js'

/** What a warning may look at: the resolved settings, and whether an identity provider was given. */
export interface Startup {
  config: Omit<ResolvedConfig, 'warnings'>
  hasProvider: boolean
}

/** A setting that weakens security and the sentence logged about it; `perClient` rows speak once per static client. */
type Warning =
  | { perClient?: false, when: (s: Startup) => boolean, message: (s: Startup) => string }
  | { perClient: true, when: (c: StaticClient) => boolean, message: (c: StaticClient, index: number) => string }

/** A grace window longer than this (s) is logged as weakened: well above the default, sized to real clients. */
const GRACE_WARN_ABOVE = 600

/** The start-up warnings, in the order they are logged. */
const WARNINGS: Warning[] = [
  {
    when: s => { const url = new URL(s.config.issuer); return url.protocol === 'http:' && !isLoopbackHost(url.hostname) },
    message: s => `issuer ${s.config.issuer} is plain http on a non-loopback host: tokens and codes travel in clear text`
  },
  { when: s => s.config.ttl.code > 600, message: s => `ttl.code is ${s.config.ttl.code} s: authorization codes should live a minute or less` },
  { when: s => s.config.pkce.allowPlain, message: () => 'pkce.allowPlain is on: the "plain" PKCE method protects nothing against an observer of the authorization request' },
  { when: s => !s.config.pkce.required, message: () => 'pkce.required is off: clients may skip PKCE (OAuth 2.1 requires it)' },
  { when: s => s.config.registration.mode === 'public', message: () => 'registration.mode is "public": anyone can register a client (normal for MCP; keep rate limits on)' },
  {
    when: s => s.config.registration.mode !== 'off' && s.config.registration.unusedClientTtlSeconds === 0,
    message: () => 'registration.unusedClientTtlSeconds is 0: dynamically registered clients are kept forever, however many are registered'
  },
  { when: s => s.config.refreshGraceSeconds === 0, message: () => 'refreshGraceSeconds is 0: a client that retries a refresh after a lost response loses its whole grant' },
  { when: s => s.config.refreshGraceSeconds > GRACE_WARN_ABOVE, message: s => `refreshGraceSeconds is ${s.config.refreshGraceSeconds}: a stolen, already used refresh token stays usable that long` },
  { when: s => s.config.upstreamRecheckSeconds === 0, message: () => 'upstreamRecheckSeconds is 0: a user disabled or refused at the identity provider keeps access until the grant ends' },
  { when: s => s.config.upstreamRecheckSeconds > 86400, message: s => `upstreamRecheckSeconds is ${s.config.upstreamRecheckSeconds}: a user disabled at the identity provider keeps access that long after the last check` },
  {
    when: s => s.config.consent.rememberNativeClients,
    message: () => 'consent.rememberNativeClients is on: a remembered approval lets any program on the user\'s device obtain codes for a public native client without the consent page (RFC 8252 §8.6)'
  },
  { when: s => s.config.redirects.allowHttp, message: () => 'redirects.allowHttp is on: authorization codes may be sent over plain http' },
  { when: s => s.config.redirects.allowPrivateHosts, message: () => 'redirects.allowPrivateHosts is on: clients may redirect to private network addresses' },
  { when: s => s.config.cimd.allowPrivateAddresses, message: () => 'clientIdMetadataDocuments.allowPrivateAddresses is on: client metadata may be fetched from private addresses (SSRF); for tests only' },
  { when: s => !s.config.rateLimits.enabled, message: () => 'rateLimit.enabled is off: no endpoint is rate limited' },
  { when: s => s.config.cors?.origins === '*', message: () => 'cors.origins is "*": any web page may call the OAuth endpoints from a browser' },
  { when: s => s.config.encryptionKeys.length === 0, message: () => 'no encryption key: upstream tokens are stored unencrypted (set encryption.keys)' },
  {
    when: s => s.config.secret === undefined,
    message: () => 'no secret: consent cookies, refresh-token derivation and user pseudonyms use a per-process key (approvals and grace-window replays are lost on restart and do not cross replicas; pseudonyms change at restart)'
  },
  {
    perClient: true,
    when: c => c.refresh_grace_seconds !== undefined && c.refresh_grace_seconds > GRACE_WARN_ABOVE,
    message: (c, i) => `clients[${i}].refresh_grace_seconds is ${c.refresh_grace_seconds}: a stolen, already used refresh token of ${c.client_id} stays usable that long`
  },
  {
    when: s => s.config.telemetry.metrics !== null && s.config.telemetry.metrics.token === undefined,
    message: s => `metrics.token is not set: ${s.config.telemetry.metrics?.path} is readable by anyone who can reach the server (set a token, or block the path at your proxy)`
  },
  { when: s => !s.hasProvider, message: () => 'no identity provider configured: the authorization endpoint cannot log anyone in' }
]

/** Every warning that applies, each a sentence for the start-up log. */
export function startupWarnings (s: Startup): string[] {
  const found: string[] = []
  for (const w of WARNINGS) {
    if (w.perClient === true) {
      s.config.clients.forEach((c, i) => { if (w.when(c)) found.push(w.message(c, i)) })
    } else if (w.when(s)) {
      found.push(w.message(s))
    }
  }
  return found
}

function isLoopbackHost (hostname: string): boolean {
  const h = hostname.toLowerCase()
  return h === 'localhost' || h === '[::1]' || h === '::1' || /^127(?:\.\d{1,3}){3}$/.test(h)
}
