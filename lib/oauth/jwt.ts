/**
 * The checks of a signed JWT assertion (a client assertion, RFC 7523 §3; an ID-JAG) that need no key
 * and no I/O: size, compact shape, header, claim types, times, issuer, audience. They run before any
 * key is fetched, so garbage costs no JWKS request, and each refusal says what is wrong. The
 * signature is checked afterwards, by the caller, with jose.
 */

/** Asymmetric algorithms only: never `none`, never HMAC (a public key must not become a shared secret). */
export const ASSERTION_ALGORITHMS: readonly string[] = Object.freeze(['ES256', 'RS256', 'PS256', 'EdDSA'])

/** RFC 7523 §2.1: the grant type of an authorization grant that is a signed JWT (here: an ID-JAG). */
export const JWT_BEARER_GRANT = 'urn:ietf:params:oauth:grant-type:jwt-bearer'

/** Longer assertions are refused before they are decoded. */
export const MAX_ASSERTION_LENGTH = 8192

/** The longest `jti` kept in the replay cache. */
const MAX_JTI_LENGTH = 256

const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export interface AssertionHeader {
  alg: string
  kid?: string
  typ?: string
  [name: string]: unknown
}

export interface AssertionClaims {
  iss: string
  sub: string
  aud: string[]
  exp: number
  iat?: number
  nbf?: number
  jti: string
  [name: string]: unknown
}

/** A decoded but not yet verified assertion. */
export interface DecodedAssertion {
  header: AssertionHeader
  claims: AssertionClaims
}

/** What a valid assertion must say, apart from its signature. */
export interface AssertionExpectations {
  /** The exact `iss` (a client assertion: the client id). Absent: any, the caller decides by it. */
  issuer?: string
  /** The exact `sub` (a client assertion: the client id). */
  subject?: string
  /** `aud` must contain one of these. */
  audience: readonly string[]
  /** The header's `typ`, compared as RFC 8725 §3.11 says (case-insensitive, `application/` optional). */
  typ?: string
  /** Now, epoch ms. */
  now: number
  /** Clock difference tolerated on `exp`, `iat` and `nbf`, in seconds. */
  skewSeconds: number
  /** Longest accepted lifetime (`exp` minus `iat`, or minus now without `iat`), in seconds. */
  maxLifetimeSeconds: number
}

/** A refusal, with the sentence the client gets as `error_description`. */
export class AssertionRefused extends Error {
  constructor (description: string) {
    super(description)
    this.name = 'AssertionRefused'
  }
}

function refuse (description: string): never {
  throw new AssertionRefused(description)
}

function decodeJson (segment: string, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
  } catch {
    refuse(`its ${what} is not JSON`)
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse(`its ${what} is not a JSON object`)
  return value as Record<string, unknown>
}

function optionalNumber (claims: Record<string, unknown>, name: string): number | undefined {
  const value = claims[name]
  if (value === undefined) return undefined
  if (typeof value !== 'number' || !Number.isFinite(value)) refuse(`"${name}" must be a number (seconds since the epoch)`)
  return value
}

function requiredString (claims: Record<string, unknown>, name: string): string {
  const value = claims[name]
  if (value === undefined) refuse(`"${name}" is missing`)
  if (typeof value !== 'string' || value === '') refuse(`"${name}" must be a non-empty string`)
  return value
}

/**
 * Decode a compact JWS and check its shape: three base64url parts (a JWE has five and is refused),
 * a JSON header with an allowed `alg` and no nested JWT, JSON claims of the right types.
 */
export function decodeAssertion (value: string): DecodedAssertion {
  if (value.length > MAX_ASSERTION_LENGTH) refuse(`it is longer than ${MAX_ASSERTION_LENGTH} characters`)
  if (!COMPACT_JWS.test(value)) {
    if (value.split('.').length === 5) refuse('encrypted JWTs (JWE) are not accepted')
    refuse('it is not a signed JWT (three base64url parts, the signature not empty)')
  }
  const [head, body] = value.split('.') as [string, string, string]
  const header = decodeJson(head, 'header')
  const alg = header.alg
  if (typeof alg !== 'string') refuse('its header has no "alg"')
  if (!ASSERTION_ALGORITHMS.includes(alg)) refuse(`the algorithm ${alg.slice(0, 20)} is not accepted (${ASSERTION_ALGORITHMS.join(', ')})`)
  if (header.kid !== undefined && (typeof header.kid !== 'string' || header.kid.length > 512)) refuse('its "kid" must be a string')
  if (header.typ !== undefined && typeof header.typ !== 'string') refuse('its "typ" must be a string')
  if (typeof header.cty === 'string' && header.cty.toUpperCase() === 'JWT') refuse('nested JWTs are not accepted')
  if (header.crit !== undefined) refuse('critical header parameters ("crit") are not supported')

  const raw = decodeJson(body, 'claims set')
  const aud = raw.aud
  const audience = typeof aud === 'string' ? [aud] : aud
  if (!Array.isArray(audience) || audience.length === 0 || !audience.every(a => typeof a === 'string')) {
    refuse('"aud" must be a string or a non-empty array of strings')
  }
  const exp = optionalNumber(raw, 'exp')
  if (exp === undefined) refuse('"exp" is missing')
  const claims: AssertionClaims = {
    ...raw,
    iss: requiredString(raw, 'iss'),
    sub: requiredString(raw, 'sub'),
    aud: audience,
    exp,
    jti: requiredString(raw, 'jti')
  }
  if (claims.jti.length > MAX_JTI_LENGTH) refuse(`"jti" is longer than ${MAX_JTI_LENGTH} characters`)
  const iat = optionalNumber(raw, 'iat')
  const nbf = optionalNumber(raw, 'nbf')
  if (iat === undefined) delete claims.iat
  if (nbf === undefined) delete claims.nbf
  return { header: header as AssertionHeader, claims }
}

/** RFC 8725 §3.11: `typ` values compare case-insensitively, with or without `application/`. */
function sameTyp (actual: string, expected: string): boolean {
  const bare = (t: string): string => t.toLowerCase().replace(/^application\//, '')
  return bare(actual) === bare(expected)
}

/** Check what the claims and header say against what the caller expects; throws AssertionRefused. */
export function checkAssertion ({ header, claims }: DecodedAssertion, expect: AssertionExpectations): void {
  if (expect.typ !== undefined && (header.typ === undefined || !sameTyp(header.typ, expect.typ))) {
    refuse(`its "typ" must be ${expect.typ}`)
  }
  if (expect.issuer !== undefined && claims.iss !== expect.issuer) refuse('"iss" is not the expected issuer')
  if (expect.subject !== undefined && claims.sub !== expect.subject) refuse('"sub" is not the expected subject')
  if (!claims.aud.some(a => expect.audience.includes(a))) refuse(`"aud" must name ${expect.audience[0] ?? 'this server'}`)
  const now = expect.now / 1000
  const skew = expect.skewSeconds
  if (claims.exp <= now - skew) refuse('it has expired')
  if (claims.iat !== undefined && claims.iat > now + skew) refuse('"iat" is in the future')
  if (claims.nbf !== undefined && claims.nbf > now + skew) refuse('it is not valid yet ("nbf")')
  const lifetime = claims.exp - (claims.iat ?? now)
  if (lifetime > expect.maxLifetimeSeconds) refuse(`its lifetime exceeds ${expect.maxLifetimeSeconds} seconds`)
}
