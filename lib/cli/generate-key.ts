import { generateKey } from '../security/keyring.js'

/**
 * `generate-key`: fresh keys in the forms the options and the examples read. One random source
 * serves both kinds (32 random bytes, base64url, from the key ring's own generator).
 */

/** `cookie` and `pseudonym` are accepted because both keys are derived from the deployment secret. */
export const KEY_KINDS = ['encryption', 'secret', 'cookie', 'pseudonym'] as const
export type KeyKind = typeof KEY_KINDS[number]

export function isKeyKind (value: string): value is KeyKind {
  return (KEY_KINDS as readonly string[]).includes(value)
}

/** The lines to print for the kinds asked (both kinds when none), each key with where it goes. */
export function keyLines (kinds: readonly KeyKind[], now: Date): string[] {
  const wanted = new Set(kinds.length === 0 ? ['encryption', 'secret'] : kinds.map(k => k === 'encryption' ? k : 'secret'))
  const lines: string[] = []
  if (wanted.has('encryption')) {
    const key = generateKey()
    // An id that sorts by age, so a key file reads oldest first as the ring wants it.
    const id = now.toISOString().slice(0, 7)
    lines.push(
      '# Encryption key for upstream tokens at rest (AES-256-GCM): option encryption.keys = [{ id, key }];',
      '# the last key encrypts, every key decrypts. The example reads MCP_OAUTH_ENCRYPTION_KEY; the',
      '# production example reads "id key" lines, oldest first, from the file named by ENCRYPTION_KEYS_FILE.',
      `MCP_OAUTH_ENCRYPTION_KEY=${key}`,
      `${id} ${key}`
    )
  }
  if (wanted.has('secret')) {
    if (lines.length > 0) lines.push('')
    lines.push(
      '# Deployment secret: option secret. Consent cookies, refresh-token derivation and user pseudonyms',
      '# each use a key derived from it; the same value on every replica, never in the store. The example',
      '# reads MCP_OAUTH_SECRET; the production example reads the file named by COOKIE_SECRET_FILE.',
      `MCP_OAUTH_SECRET=${generateKey()}`
    )
  }
  return lines
}
