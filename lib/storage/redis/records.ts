import type { RefreshTokenRecord } from '../contract.js'
import { RedisStoreError } from '../../errors.js'

/**
 * Records as the RedisStore keeps them: JSON for what never changes, hash fields (and key TTLs)
 * for what does, and the replies of its scripts read back into records.
 */

/** A TTL for a record that ends at `expiresAt`, seen at `now`; at least 1 ms. */
export function ttlOf (expiresAt: number, now: number): number {
  return Math.max(1, Math.ceil(expiresAt - now))
}

/** A script's array reply as strings. */
export function strings (reply: unknown): string[] {
  if (!Array.isArray(reply)) throw new RedisStoreError('unexpected reply from a RedisStore script')
  return reply.map(x => String(x))
}

/** The immutable part of a refresh token, stored as JSON; rotation state lives in hash fields. */
export function refreshBase (token: RefreshTokenRecord): RefreshTokenRecord {
  const { rotatedAt: _r, successor: _s, ...base } = token
  return base
}

export function refreshRecord (json: string, rotatedAt: string, successor: string | undefined): RefreshTokenRecord {
  const token = JSON.parse(json) as RefreshTokenRecord
  if (rotatedAt !== '') token.rotatedAt = Number(rotatedAt)
  if (successor !== undefined) token.successor = successor
  return token
}
