import type { ResolvedConfig } from '../options/index.js'
import type { Auditor } from '../security/audit.js'
import type { FetchTestHooks } from '../security/fetch.js'
import type { ClientRecord, Store } from '../storage/contract.js'
import { hashToken } from '../oauth/tokens.js'
import { CimdResolver } from './cimd.js'

export interface ClientDirectoryDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  /** TEST ONLY: name resolution and trusted CA for metadata documents (the `cimdTestHooks` option). */
  fetchHooks?: FetchTestHooks | undefined
}

/**
 * The one place a client is looked up, wherever it comes from: the options (static), the store
 * (dynamically registered, and the static ones written there at start), or its metadata document
 * (a client_id that is an https URL, when documents are enabled).
 */
export class ClientDirectory {
  readonly #d: ClientDirectoryDeps
  readonly #cimd: CimdResolver | undefined

  constructor (deps: ClientDirectoryDeps) {
    this.#d = deps
    const { config, auditor } = deps
    this.#cimd = config.cimd.enabled
      ? new CimdResolver({
        redirectPolicy: config.redirects,
        scopes: config.scopes,
        timeoutMs: config.cimd.timeoutMs,
        minCacheSeconds: config.cimd.minCacheSeconds,
        maxCacheSeconds: config.cimd.maxCacheSeconds,
        maxConcurrentFetches: config.cimd.maxConcurrentFetches,
        failureCacheSeconds: config.cimd.failureCacheSeconds,
        allowPrivateAddresses: config.cimd.allowPrivateAddresses,
        now: deps.now,
        // A client known by its metadata document "registers" each time the document is (re)fetched.
        onFetched: clientId => { auditor.emit('client_registered', { clientId, source: 'cimd' }) },
        ...(deps.fetchHooks ?? {})
      })
      : undefined
  }

  /** Write the clients from the options; at every start, so that a changed secret takes effect. */
  async saveStaticClients (): Promise<void> {
    const issuedAt = Math.floor(this.#d.now() / 1000)
    for (const c of this.#d.config.clients) {
      const method = c.token_endpoint_auth_method ?? (c.client_secret === undefined ? 'none' : 'client_secret_basic')
      const record: ClientRecord = {
        clientId: c.client_id,
        redirectUris: c.redirect_uris,
        tokenEndpointAuthMethod: method,
        grantTypes: c.grant_types,
        // A machine client (client_credentials only) never comes to the authorization endpoint.
        responseTypes: c.grant_types.includes('authorization_code') ? ['code'] : [],
        applicationType: c.redirect_uris.every(u => u.startsWith('https:')) ? 'web' : 'native',
        metadata: {},
        clientIdIssuedAt: issuedAt,
        source: 'static'
      }
      if (c.client_secret !== undefined) record.clientSecretHash = hashToken(c.client_secret)
      if (c.client_name !== undefined) record.clientName = c.client_name
      if (c.scope !== undefined) record.scope = c.scope
      if (c.refresh_grace_seconds !== undefined) record.refreshGraceSeconds = c.refresh_grace_seconds
      await this.#d.store.saveClient(record)
      this.#d.auditor.emit('client_registered', { clientId: record.clientId, source: 'static' })
    }
  }

  /** The client with this id, or null. A metadata document that cannot be used throws invalid_client. */
  async find (clientId: string): Promise<ClientRecord | null> {
    if (this.#cimd !== undefined && CimdResolver.isCimdClientId(clientId)) return this.#cimd.resolve(clientId)
    return this.#d.store.getClient(clientId, this.#d.now())
  }

  /** Stop fetching metadata documents (on close). */
  close (): void {
    this.#cimd?.close()
  }
}
