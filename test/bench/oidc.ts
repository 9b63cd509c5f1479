/**
 * The comparison authorization server: oidc-provider (a certified Node.js OpenID Provider) on
 * loopback, configured to do what the plugin does at its token endpoint: a public client with
 * PKCE S256, one resource (RFC 8707) with opaque access tokens, refresh tokens rotated on every
 * use, no ID token (the scope has no `openid`); and a confidential machine client with the
 * client_credentials grant (client_secret_basic), in the machine part a second one that authenticates
 * with private_key_jwt (ES256; its assertions' jti spent through the same adapter). Credentials are minted straight through its models
 * (Grant, RefreshToken, AuthorizationCode), as its own token endpoint would have saved them.
 *
 * Storage: a Map-backed adapter with the shape of oidc-provider's own memory adapter. Its built-in
 * one is an LRU of 1000 entries, which would evict the pre-minted pool; the plugin's memory store
 * is unbounded, so both sides keep everything in a Map.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { exportJWK, generateKeyPair } from 'jose'
import { TOKEN_BENCH } from './protocol.js'

/* Just enough of oidc-provider's shape for this file (the package ships no type declarations). */
interface Model {
  save (): Promise<string>
}
interface GrantModel extends Model {
  addResourceScope (resource: string, scope: string): void
}
type ModelClass<T extends Model = Model> = new (payload: Record<string, unknown>) => T
interface ProviderInstance {
  Client: { find (id: string): Promise<unknown> }
  Grant: ModelClass<GrantModel>
  RefreshToken: ModelClass
  AuthorizationCode: ModelClass
  on (event: string, listener: (...args: unknown[]) => void): void
  callback (): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void
}
type ProviderClass = new (issuer: string, configuration: Record<string, unknown>) => ProviderInstance

interface Entry {
  payload: Record<string, unknown>
  /** Epoch ms; Infinity when the record has no lifetime. */
  expiresAt: number
}

/** One Map for every model, as oidc-provider's memory adapter keeps them, without the LRU bound. */
const records = new Map<string, Entry>()
const grantMembers = new Map<string, Set<string>>()
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode', 'BackchannelAuthenticationRequest'])

function live (key: string): Entry | undefined {
  const entry = records.get(key)
  if (entry === undefined) return undefined
  if (entry.expiresAt <= Date.now()) {
    records.delete(key)
    return undefined
  }
  return entry
}

class MapAdapter {
  readonly #model: string

  constructor (model: string) {
    this.#model = model
  }

  #key (id: string): string {
    return `${this.#model}:${id}`
  }

  async upsert (id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
    const key = this.#key(id)
    records.set(key, { payload, expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity })
    const grantId = payload.grantId
    if (GRANTABLE.has(this.#model) && typeof grantId === 'string') {
      let members = grantMembers.get(grantId)
      if (members === undefined) grantMembers.set(grantId, members = new Set())
      members.add(key)
    }
  }

  async find (id: string): Promise<Record<string, unknown> | undefined> {
    return live(this.#key(id))?.payload
  }

  async findByUid (uid: string): Promise<Record<string, unknown> | undefined> {
    for (const [key, entry] of records) {
      if (key.startsWith('Session:') && entry.payload.uid === uid) return live(key)?.payload
    }
    return undefined
  }

  async findByUserCode (): Promise<undefined> {
    return undefined
  }

  async consume (id: string): Promise<void> {
    const entry = live(this.#key(id))
    if (entry !== undefined) entry.payload.consumed = Math.floor(Date.now() / 1000)
  }

  async destroy (id: string): Promise<void> {
    records.delete(this.#key(id))
  }

  async revokeByGrantId (grantId: string): Promise<void> {
    for (const key of grantMembers.get(grantId) ?? []) records.delete(key)
    grantMembers.delete(grantId)
  }
}

export interface OidcBench {
  port: number
  mint (grant: 'refresh' | 'code', n: number): Promise<string[]>
  discard (refreshTokens: string[]): Promise<void>
  close (): Promise<void>
}

/** `machineKey`: the public key of a second machine client, which authenticates with private_key_jwt. */
export async function startOidcBench (machineKey?: Record<string, unknown>): Promise<OidcBench> {
  // A non-literal specifier: the package ships no type declarations, so it is typed by hand above.
  const specifier: string = 'oidc-provider'
  const { info, warn } = console
  // Its import and constructor print development notices (and "unsupported runtime" on Node 20).
  console.info = () => {}
  console.warn = () => {}
  let provider: ProviderInstance
  const server: Server = createServer()
  try {
    const Provider = (await import(specifier) as { default: ProviderClass }).default
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const key = { ...(await exportJWK(privateKey)), kid: 'bench', alg: 'ES256', use: 'sig' }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '127.0.0.1', () => { resolve() })
    })
    const port = (server.address() as AddressInfo).port
    provider = new Provider(`http://127.0.0.1:${port}`, {
      adapter: MapAdapter,
      clients: [{
        client_id: TOKEN_BENCH.clientId,
        token_endpoint_auth_method: 'none',
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: [TOKEN_BENCH.redirectUri],
        id_token_signed_response_alg: 'ES256'
      }, {
        client_id: TOKEN_BENCH.machine.clientId,
        client_secret: TOKEN_BENCH.machine.secret,
        token_endpoint_auth_method: 'client_secret_basic',
        grant_types: ['client_credentials'],
        response_types: [],
        redirect_uris: [],
        scope: TOKEN_BENCH.scope,
        // Only because this provider signs with ES256 alone: it never issues this client an ID token.
        id_token_signed_response_alg: 'ES256'
      }, ...(machineKey !== undefined
        ? [{
            client_id: TOKEN_BENCH.machineJwt.clientId,
            token_endpoint_auth_method: 'private_key_jwt',
            token_endpoint_auth_signing_alg: 'ES256',
            jwks: { keys: [machineKey] },
            grant_types: ['client_credentials'],
            response_types: [],
            redirect_uris: [],
            scope: TOKEN_BENCH.scope,
            id_token_signed_response_alg: 'ES256'
          }]
        : [])],
      jwks: { keys: [key] },
      cookies: { keys: [randomBytes(32).toString('base64url')] },
      scopes: [TOKEN_BENCH.scope],
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => TOKEN_BENCH.resource,
          useGrantedResource: () => true,
          getResourceServerInfo: () => ({ scope: TOKEN_BENCH.scope, accessTokenFormat: 'opaque', accessTokenTTL: 3600 })
        }
      },
      pkce: { required: () => true },
      issueRefreshToken: () => true,
      rotateRefreshToken: () => true,
      expiresWithSession: () => false,
      ttl: { AccessToken: 3600, ClientCredentials: 3600, AuthorizationCode: 3600, RefreshToken: 30 * 86400, Grant: 90 * 86400, Session: 3600, Interaction: 600, IdToken: 3600 },
      async findAccount (_ctx: unknown, sub: string) {
        return { accountId: sub, async claims () { return { sub } } }
      }
    })
    await provider.Client.find(TOKEN_BENCH.clientId)
  } catch (err) {
    server.close()
    throw err
  } finally {
    console.info = info
    console.warn = warn
  }
  server.on('request', provider.callback())
  const client = await provider.Client.find(TOKEN_BENCH.clientId)
  const challenge = createHash('sha256').update(TOKEN_BENCH.codeVerifier).digest('base64url')
  let user = 0

  return {
    port: (server.address() as AddressInfo).port,
    async mint (kind, n) {
      const items: string[] = []
      for (let i = 0; i < n; i++) {
        const accountId = `bench-user-${user++}`
        const grant = new provider.Grant({ accountId, clientId: TOKEN_BENCH.clientId })
        grant.addResourceScope(TOKEN_BENCH.resource, TOKEN_BENCH.scope)
        const grantId = await grant.save()
        const common = {
          accountId, client, grantId, scope: TOKEN_BENCH.scope, resource: TOKEN_BENCH.resource, authTime: Math.floor(Date.now() / 1000)
        }
        const token = kind === 'refresh'
          ? new provider.RefreshToken({ ...common, gty: 'authorization_code', rotations: 0 })
          : new provider.AuthorizationCode({
            ...common, redirectUri: TOKEN_BENCH.redirectUri, codeChallenge: challenge, codeChallengeMethod: 'S256'
          })
        items.push(await token.save())
      }
      return items
    },
    async discard (tokens) {
      const adapter = new MapAdapter('RefreshToken')
      for (const token of tokens) {
        const grantId = (await adapter.find(token))?.grantId
        if (typeof grantId !== 'string') continue
        await adapter.revokeByGrantId(grantId)
        await new MapAdapter('Grant').destroy(grantId)
      }
    },
    close () {
      return new Promise<void>(resolve => {
        server.close(() => { resolve() })
        server.closeAllConnections()
      })
    }
  }
}
