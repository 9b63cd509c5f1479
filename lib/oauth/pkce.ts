import { hash } from 'node:crypto'
import { safeEqual } from './tokens.js'

/** RFC 7636 §4.1: 43–128 characters of [A-Z] / [a-z] / [0-9] / "-" / "." / "_" / "~". */
const VERIFIER = /^[A-Za-z0-9\-._~]{43,128}$/
/** An S256 challenge is base64url of 32 bytes: exactly 43 characters. */
const S256_CHALLENGE = /^[A-Za-z0-9_-]{43}$/

export type PkceMethod = 'S256' | 'plain'

export function isValidVerifier (verifier: string): boolean {
  return VERIFIER.test(verifier)
}

export function isValidChallenge (challenge: string, method: PkceMethod): boolean {
  return method === 'S256' ? S256_CHALLENGE.test(challenge) : VERIFIER.test(challenge)
}

export function s256 (verifier: string): string {
  return hash('sha256', verifier, 'base64url')
}

/** Does the verifier match the challenge stored with the code? Constant-time comparison. */
export function verifyPkce (verifier: string, challenge: string, method: PkceMethod): boolean {
  if (!isValidVerifier(verifier)) return false
  return safeEqual(method === 'S256' ? s256(verifier) : verifier, challenge)
}
