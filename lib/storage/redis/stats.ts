import type { StoreStats } from '../contract.js'
import type { Connection } from './connection.js'

/** Keys examined per SCAN step. */
const SCAN_COUNT = 1000

/**
 * Approximate counts of a store's records, from one incremental SCAN of its prefix (never KEYS):
 * each step examines about 1000 keys and is bounded by `commandTimeoutMs`, so Redis is never
 * blocked; the cost is one round trip per 1000 keys in the database. SCAN may return a key twice
 * and misses keys created during the pass; fine for a gauge.
 */
export async function countKeys (conn: Connection, prefix: string): Promise<StoreStats> {
  const counts: StoreStats = { accessTokens: 0, refreshTokens: 0, grants: 0, clients: 0, flows: 0, codes: 0 }
  const kinds: Record<string, keyof StoreStats> = {
    at: 'accessTokens', rt: 'refreshTokens', g: 'grants', c: 'clients', f: 'flows', ac: 'codes'
  }
  const match = globEscape(prefix) + '*'
  const skip = prefix.length
  let cursor = '0'
  do {
    const [next, keys] = await conn.op('stats', () => conn.client.scan(cursor, 'MATCH', match, 'COUNT', SCAN_COUNT))
    for (const key of keys) {
      const colon = key.indexOf(':', skip)
      const kind = colon < 0 ? undefined : kinds[key.slice(skip, colon)]
      if (kind) counts[kind]++
    }
    cursor = next
  } while (cursor !== '0')
  return counts
}

function globEscape (s: string): string {
  return s.replace(/[*?[\]\\]/g, c => '\\' + c)
}
