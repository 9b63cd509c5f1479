import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'

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

/** A fresh credential of the given kind: prefix + 43 base64url characters (256 bits). */
export function generateToken (kind: TokenKind): string {
  return TOKEN_PREFIX[kind] + randomBytes(RANDOM_BYTES).toString('base64url')
}

/** Random identifiers that are not secrets (grant ids, client ids). 128 bits. */
export function generateId (): string {
  return randomBytes(16).toString('base64url')
}

/**
 * The only form in which a credential is stored: SHA-256 of the whole string, base64url.
 * A plain (unsalted) hash is right here: the input has 256 bits of entropy, so there is
 * nothing to brute-force, and lookups by hash must be deterministic.
 */
export function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('base64url')
}

/** Shape check before any lookup: a token of this kind that could have come from generateToken. */
const BODY = /^[A-Za-z0-9_-]{43}$/
export function looksLike (kind: TokenKind, value: string): boolean {
  const prefix = TOKEN_PREFIX[kind]
  return value.length === prefix.length + 43 && value.startsWith(prefix) && BODY.test(value.slice(prefix.length))
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
