import { hash, randomFillSync, timingSafeEqual } from 'node:crypto'

/**
 * Prefixes make a leaked credential recognisable to secret scanners and to a human reading a log
 * by mistake. They carry no meaning for validation: the random part alone is the secret.
 */
export const TOKEN_PREFIX = {
  accessToken: 'mcpat_',
  refreshToken: 'mcprt_',
  authorizationCode: 'mcpac_',
  clientSecret: 'mcpcs_',
  registrationToken: 'mcprg_',
  flowState: 'mcpfs_'
} as const

export type TokenKind = keyof typeof TOKEN_PREFIX

/** 32 random bytes = 256 bits, the floor set by the design. */
const RANDOM_BYTES = 32

/**
 * Randomness comes from the CSPRNG in batches, as `crypto.randomUUID()` does: one call per 4 KiB
 * instead of one per token (a call costs microseconds; a refresh needs three). Bytes are zeroed
 * once handed out, so the pool only ever holds bytes nobody has seen yet.
 */
const POOL_SIZE = 4096
const pool = Buffer.allocUnsafeSlow(POOL_SIZE)
let poolOffset = POOL_SIZE

function take (n: number): number {
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool)
    poolOffset = 0
  }
  const start = poolOffset
  poolOffset += n
  return start
}

/** `n` (at most 4096) fresh random bytes, base64url. */
function randomBase64url (n: number): string {
  const start = take(n)
  const text = pool.toString('base64url', start, start + n)
  pool.fill(0, start, start + n)
  return text
}

/** A fresh credential of the given kind: prefix + 43 base64url characters (256 bits). */
export function generateToken (kind: TokenKind): string {
  return TOKEN_PREFIX[kind] + randomBase64url(RANDOM_BYTES)
}

/** Random identifiers that are not secrets (grant ids, client ids). 128 bits. */
export function generateId (): string {
  return randomBase64url(16)
}

/**
 * The only form in which a credential is stored: SHA-256 of the whole string, base64url.
 * A plain (unsalted) hash is right here: the input has 256 bits of entropy, so there is
 * nothing to brute-force, and lookups by hash must be deterministic.
 */
export function hashToken (token: string): string {
  return hash('sha256', token, 'base64url')
}

/**
 * Whether `secret` is the credential whose hashToken is `storedHash`, compared in constant time: the
 * check of a client secret or a resource server's on every request that presents one (the digests
 * are compared as bytes, without encoding the fresh one).
 */
export function matchesHash (secret: string, storedHash: string): boolean {
  const digest = hash('sha256', secret, 'buffer') as unknown as Buffer
  const stored = Buffer.from(storedHash, 'base64url')
  if (stored.length !== digest.length) {
    timingSafeEqual(digest, digest)
    return false
  }
  return timingSafeEqual(digest, stored)
}

/** Shape check before any lookup: a token of this kind that could have come from generateToken. */
const SHAPES = Object.fromEntries(Object.entries(TOKEN_PREFIX).map(([kind, prefix]) =>
  [kind, new RegExp(`^${prefix}[A-Za-z0-9_-]{43}$`)])) as Record<TokenKind, RegExp>
export function looksLike (kind: TokenKind, value: string): boolean {
  return value.length === TOKEN_PREFIX[kind].length + 43 && SHAPES[kind].test(value)
}

/** Constant-time comparison of two secrets (or two hashes of secrets). */
export function safeEqual (a: string, b: string): boolean {
  const ab = Buffer.from(a)
  const bb = Buffer.from(b)
  if (ab.length !== bb.length) {
    // Still spend the same work so the length is the only thing a timing observer learns.
    timingSafeEqual(ab, ab)
    return false
  }
  return timingSafeEqual(ab, bb)
}
