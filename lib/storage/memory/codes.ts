import type { CodeRecord, ConsumeCodeResult } from '../contract.js'
import { ExpiryIndex, expire } from './sweep.js'

interface CodeEntry {
  code: CodeRecord
  usedAt?: number
  retainUntil: number
}

/**
 * The MemoryStore's authorization codes, and the grant ids that replayed codes revoked in advance
 * (a grant of such an id may not be written until the code's retention ends).
 */
export class CodeTable {
  readonly #codes = new Map<string, CodeEntry>()
  /** Grant id -> until when a grant of that id may not be written (revoked by a replayed code). */
  readonly #tombstones = new Map<string, number>()
  readonly #expiring = { codes: new ExpiryIndex(), tombstones: new ExpiryIndex() }

  get size (): number {
    return this.#codes.size
  }

  save (hash: string, code: CodeRecord): void {
    this.#codes.set(hash, { code, retainUntil: code.expiresAt })
    this.#expiring.codes.add(hash, code.expiresAt)
  }

  consume (hash: string, now: number, retainUntil: number): ConsumeCodeResult {
    const entry = this.#codes.get(hash)
    if (!entry) return { status: 'unknown' }
    if (entry.usedAt !== undefined) {
      if (entry.retainUntil <= now) {
        this.#codes.delete(hash)
        return { status: 'unknown' }
      }
      // The grant this code issues (or is still issuing) may not be written from now on.
      this.#tombstones.set(entry.code.grantId, entry.retainUntil)
      this.#expiring.tombstones.add(entry.code.grantId, entry.retainUntil)
      return { status: 'reused', code: entry.code }
    }
    if (entry.code.expiresAt <= now) {
      this.#codes.delete(hash)
      return { status: 'unknown' }
    }
    entry.usedAt = now
    entry.retainUntil = Math.max(retainUntil, entry.code.expiresAt)
    return { status: 'ok', code: entry.code }
  }

  /**
   * Whether a grant created at `createdAt` may be written under `grantId` (dated by the grant
   * itself, its caller's clock, as every expiry here is). A revocation that has ended is forgotten.
   */
  mayWriteGrant (grantId: string, createdAt: number): boolean {
    const revokedUntil = this.#tombstones.get(grantId)
    if (revokedUntil === undefined) return true
    if (revokedUntil > createdAt) return false
    this.#tombstones.delete(grantId)
    return true
  }

  /** The sweep's part for codes (kept until their retention ends) and revoked grant ids. */
  * sweep (now: number): Generator<void> {
    yield * expire(this.#expiring.tombstones, now, id => this.#tombstones.get(id), id => this.#tombstones.delete(id))
    yield * expire(this.#expiring.codes, now, hash => {
      const entry = this.#codes.get(hash)
      return entry === undefined ? undefined : Math.max(entry.retainUntil, entry.code.expiresAt)
    }, hash => this.#codes.delete(hash))
  }
}
