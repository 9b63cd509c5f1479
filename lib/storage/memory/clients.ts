import type { ClientRecord } from '../contract.js'
import { ExpiryIndex, expire } from './sweep.js'

/**
 * The MemoryStore's clients, with the index by the address that registered them (per-address caps
 * on dynamic registration). A record handed out is never changed afterwards: a renewal stores a
 * new one.
 */
export class ClientTable {
  readonly #clients = new Map<string, ClientRecord>()
  /** registeredFrom -> client ids, for per-address caps. */
  readonly #from = new Map<string, Set<string>>()
  readonly #expiring = new ExpiryIndex()

  get size (): number {
    return this.#clients.size
  }

  save (client: ClientRecord): void {
    const previous = this.#clients.get(client.clientId)
    if (previous !== undefined) this.#unindex(previous)
    this.#clients.set(client.clientId, client)
    if (client.expiresAt !== undefined) this.#expiring.add(client.clientId, client.expiresAt)
    if (client.registeredFrom !== undefined) {
      let ids = this.#from.get(client.registeredFrom)
      if (ids === undefined) this.#from.set(client.registeredFrom, ids = new Set())
      ids.add(client.clientId)
    }
  }

  countFrom (address: string, now: number): number {
    const ids = this.#from.get(address)
    if (ids === undefined) return 0
    let n = 0
    for (const id of ids) if (this.get(id, now) !== null) n++
    return n
  }

  get (clientId: string, now: number): ClientRecord | null {
    const client = this.#clients.get(clientId)
    if (!client) return null
    if (client.expiresAt !== undefined && client.expiresAt <= now) {
      this.delete(clientId)
      return null
    }
    return client
  }

  delete (clientId: string): boolean {
    const client = this.#clients.get(clientId)
    if (client === undefined) return false
    this.#unindex(client)
    return this.#clients.delete(clientId)
  }

  renew (clientId: string, expiresAt: number, now: number): boolean {
    const client = this.#clients.get(clientId)
    if (client === undefined) return false
    if (client.expiresAt !== undefined && client.expiresAt <= now) {
      this.delete(clientId)
      return false
    }
    if (client.expiresAt !== undefined && client.expiresAt >= expiresAt) return true
    // A new record, not a change to the one callers may hold (get hands it out).
    this.#clients.set(clientId, { ...client, expiresAt })
    this.#expiring.add(clientId, expiresAt)
    return true
  }

  /** The sweep's part for clients: those expired at `now` go. */
  sweep (now: number): Generator<void> {
    return expire(this.#expiring, now, id => this.#clients.get(id)?.expiresAt, id => this.delete(id))
  }

  #unindex (client: ClientRecord): void {
    if (client.registeredFrom === undefined) return
    const ids = this.#from.get(client.registeredFrom)
    ids?.delete(client.clientId)
    if (ids?.size === 0) this.#from.delete(client.registeredFrom)
  }
}
