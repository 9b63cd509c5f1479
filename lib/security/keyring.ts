import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { errors } from '../errors.js'

export interface EncryptionKey {
  /** Short identifier written into every ciphertext, so old keys keep decrypting after rotation. */
  id: string
  /** 32 bytes, base64 or base64url (see generateKey()). */
  key: string
}

/** A fresh AES-256 key, base64url, for the `encryption.keys` option. */
export function generateKey (): string {
  return randomBytes(32).toString('base64url')
}

const KEY_ID = /^[A-Za-z0-9_-]{1,32}$/
const PLAIN = 'p1.'
const SEALED = 'e1.'

/**
 * Encryption at rest for upstream tokens: AES-256-GCM, a random 96-bit IV per message, and the
 * record's id as additional authenticated data, so a ciphertext moved to another record fails.
 * The last key of the ring encrypts; every key decrypts what it wrote. Without keys, values are
 * stored as tagged plaintext (and a start-up warning says so).
 */
export class KeyRing {
  readonly #keys = new Map<string, Buffer>()
  readonly #current: { id: string, key: Buffer } | undefined

  constructor (keys: readonly EncryptionKey[] = []) {
    for (const k of keys) {
      if (!KEY_ID.test(k.id)) throw new errors.ENCRYPTION_KEY(`id "${k.id}" must be 1-32 characters of [A-Za-z0-9_-]`)
      if (this.#keys.has(k.id)) throw new errors.ENCRYPTION_KEY(`id "${k.id}" appears twice`)
      const key = Buffer.from(k.key, k.key.includes('+') || k.key.includes('/') ? 'base64' : 'base64url')
      if (key.length !== 32) throw new errors.ENCRYPTION_KEY(`"${k.id}" must be 32 bytes (it is ${key.length}); use generateKey()`)
      this.#keys.set(k.id, key)
    }
    const last = keys.at(-1)
    this.#current = last === undefined ? undefined : { id: last.id, key: this.#keys.get(last.id) as Buffer }
  }

  get encrypting (): boolean {
    return this.#current !== undefined
  }

  seal (plaintext: string, context: string): string {
    if (this.#current === undefined) return PLAIN + Buffer.from(plaintext, 'utf8').toString('base64url')
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.#current.key, iv)
    cipher.setAAD(Buffer.from(context, 'utf8'))
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return [SEALED + this.#current.id, iv.toString('base64url'), body.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
  }

  open (sealed: string, context: string): string {
    if (sealed.startsWith(PLAIN)) {
      // Also read after encryption is turned on: values written before stay readable.
      return Buffer.from(sealed.slice(PLAIN.length), 'base64url').toString('utf8')
    }
    if (!sealed.startsWith(SEALED)) throw new errors.SEALED_VALUE('unknown ciphertext format')
    const [id, iv, body, tag, extra] = sealed.slice(SEALED.length).split('.')
    if (id === undefined || iv === undefined || body === undefined || tag === undefined || extra !== undefined) {
      throw new errors.SEALED_VALUE('malformed ciphertext')
    }
    const key = this.#keys.get(id)
    if (key === undefined) throw new errors.SEALED_VALUE(`no key "${id}" in the ring`)
    try {
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'))
      decipher.setAAD(Buffer.from(context, 'utf8'))
      decipher.setAuthTag(Buffer.from(tag, 'base64url'))
      return Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8')
    } catch {
      throw new errors.SEALED_VALUE('ciphertext failed authentication (tampered, or wrong key or record)')
    }
  }
}
