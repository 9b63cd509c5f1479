import { hkdfSync, randomBytes } from 'node:crypto'

/**
 * Keys derived from the deployment secret (`secret`, formerly `cookieSecret`): the same on every
 * replica, never written to the store. Each purpose gets its own key (HKDF-SHA256, RFC 5869, the
 * purpose as `info`), so a key that leaks through one use says nothing about the others. Without a
 * configured secret the keys are random per process (a start-up warning says what that costs).
 */
export class DeploymentKeys {
  readonly #ikm: Buffer
  readonly #cache = new Map<string, Buffer>()
  /** True when the secret came from the options (keys agree across replicas and restarts). */
  readonly configured: boolean

  constructor (secret?: string) {
    this.configured = secret !== undefined
    this.#ikm = secret === undefined ? randomBytes(32) : Buffer.from(secret, 'utf8')
  }

  /** The 32-byte key for one purpose, e.g. 'refresh-successor' or 'user-pseudonym'. */
  key (purpose: string): Buffer {
    let key = this.#cache.get(purpose)
    if (key === undefined) {
      key = Buffer.from(hkdfSync('sha256', this.#ikm, Buffer.alloc(0), 'fastify-mcp-oauth ' + purpose, 32))
      this.#cache.set(purpose, key)
    }
    return key
  }
}
