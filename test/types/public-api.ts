// The public types as an application sees them, through the package's own entry points (mapped to
// the sources by this folder's tsconfig.json; test/public-api.test.ts compiles it). Each
// `@ts-expect-error` line is a misuse the types must refuse: when one starts compiling, tsc fails.
import Fastify, { type FastifyRequest, type onRequestHookHandler } from 'fastify'
import mcpOAuth, {
  errors,
  generateKey,
  MemoryStore,
  OAuthError,
  StoreUnavailableError,
  UpstreamError,
  UpstreamTokenError,
  type AuditEventName,
  type AuditSink,
  type McpAuthInfo,
  type McpOAuthOptions,
  type OAuthErrorCode,
  type Provider,
  type Store,
  type TokenPair,
  type TokenResponse,
  type UpstreamAccess
} from 'fastify-mcp-oauth'
import { MemoryStore as MemoryStoreBySubpath } from 'fastify-mcp-oauth/memory'
import { RedisStore, type RedisStoreOptions } from 'fastify-mcp-oauth/redis'
import { githubProvider, googleProvider, oidcProvider } from 'fastify-mcp-oauth/providers'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T> (value: T): T { return value }
function assertEqual<A, B> (proof: Equal<A, B>): Equal<A, B> { return proof }

// Options: issuer and resources are required; the rest is optional and typed.
const options: McpOAuthOptions = {
  issuer: 'https://mcp.example.com',
  resources: ['https://mcp.example.com/mcp'],
  scopes: ['mcp:tools'],
  provider: googleProvider({ clientId: 'id', clientSecret: 'secret' }),
  registration: { mode: 'public' },
  store: new MemoryStore()
}
// A machine client: client_credentials only, with a secret and no redirect URIs.
export const machine: McpOAuthOptions = {
  ...options,
  clients: [{ client_id: 'nightly-job', client_secret: 'a-secret-of-sixteen-or-more', grant_types: ['client_credentials'], scope: 'mcp:tools' }]
}
// @ts-expect-error grant types are a closed set
const badGrant: McpOAuthOptions = { ...options, clients: [{ client_id: 'x', client_secret: 'a-secret-of-sixteen-or-more', grant_types: ['password'] }] }
// @ts-expect-error the issuer is required
const noIssuer: McpOAuthOptions = { resources: ['https://mcp.example.com/mcp'] }
// @ts-expect-error registration modes are a closed set
const badMode: McpOAuthOptions = { ...options, registration: { mode: 'open' } }
export const refused = [noIssuer, badMode, badGrant]

export async function app (): Promise<void> {
  const fastify = Fastify()
  await fastify.register(mcpOAuth, options)

  // The guard: an onRequest hook, optionally with scopes and a resource.
  expectType<onRequestHookHandler>(fastify.mcpOAuth.authenticate())
  expectType<onRequestHookHandler>(fastify.mcpOAuth.authenticate({ scopes: ['mcp:tools'], resource: 'https://mcp.example.com/mcp' }))
  // @ts-expect-error scopes are an array of strings
  fastify.mcpOAuth.authenticate({ scopes: 'mcp:tools' })

  fastify.get('/mcp', { onRequest: fastify.mcpOAuth.authenticate() }, async (request: FastifyRequest) => {
    // request.mcpAuth: null until the guard admitted the request.
    assertEqual<typeof request.mcpAuth, McpAuthInfo | null>(true)
    const auth = request.mcpAuth
    if (auth === null) return null
    expectType<string>(auth.userId)
    // A user, or a machine client (client credentials) whose userId is its client id.
    assertEqual<typeof auth.subjectType, 'user' | 'client'>(true)
    expectType<string | undefined>(auth.email)
    expectType<boolean>(auth.emailVerified)
    expectType<string[]>(auth.scopes)
    expectType<number>(auth.expiresAt)
    const upstream = await fastify.mcpOAuth.getUpstreamToken(request)
    assertEqual<typeof upstream, UpstreamAccess>(true)
    expectType<string>(upstream.accessToken)
    return auth.clientId
  })

  // Revocation members answer counts and booleans.
  expectType<Promise<number>>(fastify.mcpOAuth.revokeUser('user'))
  expectType<Promise<number>>(fastify.mcpOAuth.revokeClient('client'))
  expectType<Promise<boolean>>(fastify.mcpOAuth.revokeGrant('grant'))
  expectType<Store>(fastify.mcpOAuth.storage)
  expectType<string>(fastify.mcpOAuth.config.issuer)
  // @ts-expect-error the resolved configuration is read-only
  fastify.mcpOAuth.config.issuer = 'https://elsewhere.example.com'
  // Grants that issue a refresh token type it as present; a token response in general may lack one.
  const grant = await fastify.mcpOAuth.grants.createGrant({ userId: 'u', clientId: 'c', scopes: ['mcp:tools'], resource: 'https://mcp.example.com/mcp' })
  const pair = await fastify.mcpOAuth.grants.issueTokens(grant)
  assertEqual<typeof pair, TokenPair>(true)
  expectType<string>(pair.refresh_token)
  expectType<string | undefined>(expectType<TokenResponse>(pair).refresh_token)
  const result = await fastify.mcpOAuth.validator.validate('mcpat_x', 'https://mcp.example.com/mcp')
  if (result.valid) expectType<McpAuthInfo>(result.auth)
  else expectType<string>(result.description)
}

// Errors: one OAuth error type with the RFC codes, the store's and the providers' failures.
const oauth = new OAuthError('invalid_request', 'missing parameter')
expectType<OAuthErrorCode>(oauth.error)
expectType<number>(oauth.statusCode)
// @ts-expect-error only RFC error codes
expectType<OAuthError>(new OAuthError('bogus_error', 'x'))
expectType<Error>(new StoreUnavailableError('redis is down'))
expectType<boolean>(new UpstreamTokenError('expired', false).retryable)
expectType<Error>(new UpstreamError('google', 'invalid_grant', 'revoked'))
expectType<string>(new errors.INVALID_OPTION('issuer', 'must be https').code)

// Stores: both stores implement the contract; the subpath export is the same class.
expectType<Store>(new MemoryStoreBySubpath())
assertEqual<typeof MemoryStoreBySubpath, typeof MemoryStore>(true)
const redisOptions: RedisStoreOptions = { url: 'redis://127.0.0.1:6379' }
expectType<Store>(new RedisStore(redisOptions))

// Providers implement the Provider contract.
expectType<Provider>(oidcProvider({ issuer: 'https://id.example.com', clientId: 'id', clientSecret: 'secret' }))
expectType<Provider>(githubProvider({ clientId: 'id', clientSecret: 'secret' }))

// The audit sink receives typed events.
const sink: AuditSink = (event, fields) => {
  expectType<AuditEventName>(event)
  expectType<object>(fields)
}
// @ts-expect-error the fields of an event are typed
sink('token_refreshed', { clientId: 'c' })
expectType<string>(generateKey())
