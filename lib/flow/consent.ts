import { randomBytes } from 'node:crypto'
import { isLoopbackRedirect, matchRedirectUri } from '../oauth/redirect.js'
import { hashToken } from '../oauth/tokens.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Auditor } from '../security/audit.js'
import type { ClientRecord, Store } from '../storage/contract.js'
import { errorRedirect, type ValidatedAuthorization } from './request.js'

export interface ConsentDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  findClient: (clientId: string) => Promise<ClientRecord | null>
}

/** Approvals a browser remembers, most recent first (they travel in a cookie). */
const MAX_APPROVALS = 20

function consentFormKey (id: string): string {
  return hashToken(`consent-form:${id}`)
}

/**
 * A remembered approval covers one client, one resource and a set of scopes: a request for more
 * scopes, or for another resource, shows the consent page again.
 */
function approvalKey (req: ValidatedAuthorization): string {
  return [req.clientId, req.resource, [...req.scopes].sort().join(' ')].join('\n')
}

function isApproved (approvals: readonly string[], req: ValidatedAuthorization): boolean {
  return approvals.some(a => {
    const [clientId, resource, scopes] = a.split('\n')
    if (clientId !== req.clientId || resource !== req.resource || scopes === undefined) return false
    const granted = scopes.split(' ')
    return req.scopes.every(s => granted.includes(s))
  })
}

/**
 * A public client redirecting to a loopback address or a private-use scheme: any program on the
 * device can use its client id and receive its codes, so nothing proves that the app asking now is
 * the one the user approved before (RFC 8252 §8.6). A client ID metadata document does not change
 * that: its host vouches for the metadata, not for the program listening on the loopback port or
 * claiming the scheme.
 */
function isNativeRequest (client: ClientRecord, req: ValidatedAuthorization): boolean {
  if (client.tokenEndpointAuthMethod !== 'none') return false
  const scheme = new URL(req.redirectUri).protocol
  return isLoopbackRedirect(req.redirectUri) || (scheme !== 'https:' && scheme !== 'http:')
}

/**
 * The user's consent: what a browser's remembered approvals cover, and the consent form, which
 * answers once. `approvals` are the entries this browser remembers (the routes keep them in a
 * signed cookie); this wing only reads and returns them.
 */
export class Consent {
  readonly #d: ConsentDeps

  constructor (deps: ConsentDeps) {
    this.#d = deps
  }

  /** True when this browser approved the request before and may skip the consent page. */
  remembered (approvals: readonly string[], client: ClientRecord, req: ValidatedAuthorization): boolean {
    const remember = this.#d.config.consent.rememberNativeClients || !isNativeRequest(client, req)
    return remember && isApproved(approvals, req)
  }

  /** The approvals to remember once the user approved `req`. */
  approve (approvals: readonly string[], req: ValidatedAuthorization): string[] {
    const entry = approvalKey(req)
    return [entry, ...approvals.filter(c => c !== entry)].slice(0, MAX_APPROVALS)
  }

  /**
   * Errors may go straight back to clients the operator configured, or that the user approved in this
   * browser; for the others an automatic redirect would be an open redirector.
   */
  trusts (client: ClientRecord, approvals: readonly string[]): boolean {
    return client.source === 'static' || approvals.some(a => a.split('\n')[0] === client.clientId)
  }

  /**
   * A consent form answers once. Showing it saves a take-once record under the form's id (the flow
   * store's take-once, atomic in every store); the first submission takes it, so a form sent twice,
   * in parallel or later, cannot start a second upstream login and mint a second code.
   */
  async open (request: ValidatedAuthorization): Promise<string> {
    const now = this.#d.now()
    const id = randomBytes(32).toString('base64url')
    // Not a flow the callback can take: its key is outside the flow-state key space, and an empty
    // binding matches no browser.
    await this.#d.store.saveFlow(consentFormKey(id), {
      ...request, upstreamVerifier: '', browserBinding: '', createdAt: now, expiresAt: now + this.#d.config.ttl.flow * 1000
    })
    return id
  }

  /** Is a submitted form's client still registered with its redirect URI? (A failed lookup throws.) */
  async stillRegistered (request: ValidatedAuthorization): Promise<boolean> {
    const client = await this.#d.findClient(request.clientId)
    return client !== null && matchRedirectUri(client.redirectUris, request.redirectUri)
  }

  /** True for the first submission of the form, false for every later one (and after expiry). */
  async take (formId: string | undefined): Promise<boolean> {
    return formId !== undefined && await this.#d.store.takeFlow(consentFormKey(formId), this.#d.now()) !== null
  }

  /** Deny at the consent page: back to the client with access_denied. */
  denied (request: ValidatedAuthorization): string {
    this.#d.auditor.emit('consent_denied', { clientId: request.clientId })
    return errorRedirect(request, this.#d.config.issuer, 'access_denied', 'The user denied the request')
  }
}
