import { createHmac, randomBytes } from 'node:crypto'
import { safeEqual } from '../oauth/tokens.js'

/**
 * HMAC-SHA256 signatures for the small values this server hands to browsers (consent cookie,
 * CSRF tokens). The secret comes from the options, or is random per process (then signatures
 * do not survive a restart and do not cross replicas; a start-up warning says so).
 */
export class Signer {
  readonly #secret: Buffer

  constructor (secret?: string) {
    this.#secret = secret === undefined ? randomBytes(32) : Buffer.from(secret, 'utf8')
  }

  mac (purpose: string, value: string): string {
    return createHmac('sha256', this.#secret).update(purpose).update('\0').update(value).digest('base64url')
  }

  /** `value.mac`, for a value that itself contains no '.'-sensitive meaning (base64url JSON). */
  sign (purpose: string, payload: unknown): string {
    const value = Buffer.from(JSON.stringify(payload), 'utf8').toString('base64url')
    return `${value}.${this.mac(purpose, value)}`
  }

  /** The payload when the signature is good, else null. */
  unsign<T> (purpose: string, signed: string | undefined): T | null {
    if (signed === undefined || signed.length > 8192) return null
    const dot = signed.lastIndexOf('.')
    if (dot <= 0) return null
    const value = signed.slice(0, dot)
    if (!safeEqual(signed.slice(dot + 1), this.mac(purpose, value))) return null
    try {
      return JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as T
    } catch {
      return null
    }
  }
}
