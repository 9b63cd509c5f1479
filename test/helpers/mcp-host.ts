import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { WhoAmI } from '../../example/mcp.js'
import { Browser } from './browser.js'
import { freePort } from './login.js'
import { selfSignedCert } from './tls.js'

/*
 * What an MCP host does around the SDK client, for the end-to-end tests of both SDK generations
 * (`@modelcontextprotocol/sdk` 1.x and `@modelcontextprotocol/client` 2.x): keep the client's
 * registration and tokens, send the user's browser (a scripted one) through the login, and catch
 * the redirect to its callback. Both SDKs' OAuthClientProvider interfaces are satisfied by it.
 */

interface Teardown { teardown (fn: () => unknown): void }

/** What the example's `whoami` tool answers (as JSON). */
export type WhoAmIResult = Omit<WhoAmI, 'subjectType'> & { subjectType?: WhoAmI['subjectType'] }

/** Call `whoami` with an MCP client of either SDK generation; a tool error fails the call. */
export async function whoami (client: { callTool (params: { name: string, arguments: Record<string, unknown> }): Promise<object> }): Promise<WhoAmIResult> {
  const result = await client.callTool({ name: 'whoami', arguments: {} }) as { isError?: boolean, content?: unknown, structuredContent?: unknown }
  if (result.isError === true) throw new Error(`whoami failed: ${JSON.stringify(result.content)}`)
  return result.structuredContent as WhoAmIResult
}

/** The promise must reject with an error of this class (tap matches classes by name, which SDK errors do not always set). */
export async function rejectsWith (t: { ok (value: unknown, message: string): unknown }, promise: Promise<unknown>, type: abstract new (...args: never[]) => unknown, message: string): Promise<unknown> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof type, `${message} (${String(err)})`)
  return err
}

export interface Recorded {
  method: string
  url: URL
  status: number
  /** Form parameters of a urlencoded request body. */
  form?: URLSearchParams
  /** A JSON request body. */
  json?: unknown
  /** The bearer token the request carried. */
  bearer?: string
  /** The MCP-Protocol-Version header, on MCP requests. */
  protocolVersion?: string
}

export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

/** A fetch that records every request the SDK makes (MCP messages, discovery, registration, tokens). */
export function recordingFetch (log: Recorded[]): Fetch {
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input))
    const method = init?.method ?? (input instanceof Request ? input.method : 'GET')
    const headers = new Headers(init?.headers)
    const entry: Recorded = { method, url, status: 0 }
    const auth = headers.get('authorization')
    if (auth?.startsWith('Bearer ') === true) entry.bearer = auth.slice(7)
    const version = headers.get('mcp-protocol-version')
    if (version !== null) entry.protocolVersion = version
    const body = init?.body
    if (body instanceof URLSearchParams) entry.form = new URLSearchParams(body)
    else if (typeof body === 'string') {
      if (headers.get('content-type')?.includes('application/x-www-form-urlencoded') === true) entry.form = new URLSearchParams(body)
      else {
        try { entry.json = JSON.parse(body) } catch { entry.json = body }
      }
    }
    log.push(entry)
    const res = await fetch(input, { ...init, signal: init?.signal ?? AbortSignal.timeout(10_000) })
    entry.status = res.status
    return res
  }
}

/** The client metadata every scripted host registers (or publishes as its metadata document). */
export function hostMetadata (redirect: string) {
  return {
    redirect_uris: [redirect],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    client_name: 'MCP SDK end-to-end test'
  }
}

/**
 * An in-memory OAuthClientProvider, as an MCP host implements it. `redirectToAuthorization`
 * plays the user: a scripted browser approves the consent page and logs in at the IdP, and the
 * redirect to the callback (where nothing listens) is captured instead of being requested.
 * Tokens and client information are kept exactly as the SDK hands them over.
 */
export class ScriptedHost<
  Tokens extends { access_token: string, refresh_token?: string, scope?: string },
  Client extends { client_id: string },
  Discovery extends object
> {
  readonly redirect: string
  readonly browser = new Browser({ timeoutMs: 10_000 })
  readonly user: string
  /** Set for a client identified by a client ID metadata document instead of registration. */
  readonly clientMetadataUrl?: string
  client: Client | undefined
  stored: Tokens | undefined
  verifier: string | undefined
  lastState: string | undefined
  /** What the SDK learnt from discovery, kept across the redirect as a host must (the SDK checks the callback against it). */
  discovery: Discovery | undefined
  /** Every authorization URL the SDK sent the user to. */
  readonly authorizationUrls: URL[] = []
  /** Every redirect to the callback that the browser ended at. */
  readonly callbacks: URL[] = []
  /** Every token response that the SDK saved, in order. */
  readonly saved: Tokens[] = []
  /** The URLs of the pages with a form that the last login filled in, in order. */
  formPages: URL[] = []
  /** What the SDK asked to forget, in order. */
  readonly invalidated: string[] = []

  constructor (redirect: string, user: string, clientMetadataUrl?: string) {
    this.redirect = redirect
    this.user = user
    if (clientMetadataUrl !== undefined) this.clientMetadataUrl = clientMetadataUrl
  }

  get redirectUrl (): string {
    return this.redirect
  }

  get clientMetadata () {
    return hostMetadata(this.redirect)
  }

  state (): string {
    this.lastState = randomBytes(16).toString('base64url')
    return this.lastState
  }

  clientInformation (): Client | undefined {
    return this.client
  }

  saveClientInformation (info: Client): void {
    this.client = info
  }

  tokens (): Tokens | undefined {
    return this.stored
  }

  saveTokens (tokens: Tokens): void {
    this.stored = tokens
    this.saved.push(tokens)
  }

  saveCodeVerifier (verifier: string): void {
    this.verifier = verifier
  }

  codeVerifier (): string {
    if (this.verifier === undefined) throw new Error('no code verifier saved')
    return this.verifier
  }

  saveDiscoveryState (state: Discovery): void {
    this.discovery = state
  }

  discoveryState (): Discovery | undefined {
    return this.discovery
  }

  /** Called by the SDK when the server refuses the client (all) or a grant (tokens). */
  invalidateCredentials (scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery'): void {
    this.invalidated.push(scope)
    if (scope === 'all' || scope === 'client') this.client = undefined
    if (scope === 'all' || scope === 'tokens') this.stored = undefined
    if (scope === 'all' || scope === 'verifier') this.verifier = undefined
    if (scope === 'all' || scope === 'discovery') this.discovery = undefined
  }

  async redirectToAuthorization (url: URL): Promise<void> {
    this.authorizationUrls.push(url)
    this.formPages = []
    const login = { login: this.user, password: 'any password' }
    const page = await this.browser.drive(url, {
      stopAt: u => u.href.startsWith(this.redirect),
      fields: (form, current) => {
        this.formPages.push(current.url)
        return Object.fromEntries(Object.entries(login).filter(([name]) => form.names.has(name)))
      }
    })
    if (page.stoppedAt === undefined) throw new Error(`the login did not reach the callback: ${page.status} at ${page.url.href}`)
    this.callbacks.push(page.stoppedAt)
  }

  /** The parameters of the last callback, after checking its state (which no SDK checks for the host). */
  callbackParams (): URLSearchParams {
    const callback = this.callbacks.at(-1)
    if (callback === undefined) throw new Error('no callback captured')
    if (callback.searchParams.get('state') !== this.lastState) throw new Error('state mismatch')
    return new URLSearchParams(callback.searchParams)
  }

  /** The code of the last callback, checking `iss` (RFC 9207) as a host on SDK 1.x must do itself. */
  code (issuer: string): string {
    const params = this.callbackParams()
    if (params.get('iss') !== issuer) throw new Error('iss mismatch')
    const code = params.get('code')
    if (code === null) throw new Error(`no code in ${this.callbacks.at(-1)?.href ?? ''}`)
    return code
  }
}

/** A callback URL on loopback: only a name, nothing listens there; the browser stops at the redirect. */
export async function callbackUrl (): Promise<string> {
  return `http://127.0.0.1:${await freePort()}/callback`
}

export interface ClientMetadataDocument {
  /** The document's URL, which is the client id. */
  url: string
  /** How many times the authorization server fetched it. */
  fetches (): number
  /** The plugin options that let it fetch this loopback https server (tests only). */
  oauthOptions: { clientIdMetadataDocuments: { allowPrivateAddresses: true }, cimdTestHooks: { lookup: () => Promise<Array<{ address: string, family: 4 }>>, ca: Buffer } }
}

/**
 * A client ID metadata document for a host with this redirect URI, served over https on loopback
 * under the name client.test (a fresh self-signed certificate), closed at teardown.
 */
export async function serveClientMetadata (t: Teardown, redirect: string): Promise<ClientMetadataDocument> {
  const { cert, key } = selfSignedCert(t, ['client.test'])
  let fetches = 0
  let url = ''
  const server: Server = createServer({ key, cert }, (req, res) => {
    if (req.url !== '/client.json') {
      res.writeHead(404).end()
      return
    }
    fetches++
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=300' })
      .end(JSON.stringify({ client_id: url, ...hostMetadata(redirect) }))
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => server.close(resolve))
  })
  url = `https://client.test:${(server.address() as AddressInfo).port}/client.json`
  return {
    url,
    fetches: () => fetches,
    oauthOptions: {
      clientIdMetadataDocuments: { allowPrivateAddresses: true },
      cimdTestHooks: { lookup: async () => [{ address: '127.0.0.1', family: 4 }], ca: cert }
    }
  }
}
