/**
 * Cross App Access on one machine: this script plays an enterprise app whose user signs in at the
 * example's development IdP, then reaches the example's MCP server without a second login.
 *
 *   MCP_OAUTH_XAA_SECRET=<16+ characters> npm start              # terminal 1
 *   MCP_OAUTH_XAA_SECRET=<the same> node dist/example/xaa-client.js   # terminal 2
 *
 * It prints a URL: open it, log in with any name. The app keeps the ID token the IdP gives it;
 * CrossAppAccessProvider (MCP TypeScript client 2.x) exchanges it at the IdP for an ID-JAG for this
 * server (RFC 8693), trades that at our token endpoint (jwt-bearer grant), and `whoami` shows the
 * user. MCP_OAUTH_ISSUER (default http://127.0.0.1:PORT, PORT 3000) says where the server is.
 */
import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { pathToFileURL } from 'node:url'
import { Client, CrossAppAccessProvider, discoverAndRequestJwtAuthGrant, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { oidcProvider } from '../lib/providers/oidc.js'
import type { CrossAppAccessInfo } from './app.js'

/** How long the callback server waits for the user to log in. */
const LOGIN_WAIT_MS = 5 * 60_000

/** The enterprise IdP and client ids, from the help page of a server started with MCP_OAUTH_XAA_SECRET. */
export async function crossAppAccessInfo (issuer: string): Promise<CrossAppAccessInfo> {
  const help = await (await fetch(`${issuer}/`)).json() as { crossAppAccess?: CrossAppAccessInfo }
  if (help.crossAppAccess === undefined) throw new Error(`${issuer} does not offer Cross App Access: start it with MCP_OAUTH_XAA_SECRET set`)
  return help.crossAppAccess
}

/**
 * The app's own sign-in at the IdP (code flow with PKCE): `open` gets the URL for the user, and a
 * loopback server on the app's redirect URI waits for the IdP to come back. Returns the ID token.
 */
export async function signIn (info: CrossAppAccessInfo, secret: string, open: (url: URL) => void | Promise<void>): Promise<string> {
  const provider = oidcProvider({ issuer: info.idp, clientId: info.idpClientId, clientSecret: secret })
  const random = (): string => randomBytes(32).toString('base64url')
  const flow = { state: random(), nonce: random(), codeVerifier: random(), redirectUri: info.redirectUri }
  const redirect = new URL(info.redirectUri)
  const server = createServer()
  let timer: NodeJS.Timeout | undefined
  const back = new Promise<URL>((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('nobody logged in within 5 minutes')), LOGIN_WAIT_MS)
    server.on('request', (req, res) => {
      const url = new URL(req.url ?? '/', redirect)
      if (url.pathname !== redirect.pathname) {
        res.writeHead(404).end()
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('Signed in: back to the terminal.\n')
      resolve(url)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(Number(redirect.port), redirect.hostname, resolve)
  })
  try {
    const opened = Promise.resolve(open(await provider.authorizationUrl(flow)))
    // A failure to open (or to drive) the browser ends the wait at once.
    const callbackUrl = await Promise.race([back, opened.then(() => back)])
    const { tokens } = await provider.exchangeCode({ ...flow, callbackUrl })
    if (tokens.idToken === undefined) throw new Error('the IdP sent no ID token')
    return tokens.idToken
  } finally {
    clearTimeout(timer)
    server.close()
    server.closeAllConnections()
  }
}

/** Cross App Access proper: the ID token becomes an ID-JAG, then an access token; returns what `whoami` says. */
export async function whoami (issuer: string, info: CrossAppAccessInfo, secret: string, idToken: string): Promise<unknown> {
  const authProvider = new CrossAppAccessProvider({
    clientId: info.clientId,
    clientSecret: secret,
    expectedIssuer: issuer,
    assertion: async (ctx) => (await discoverAndRequestJwtAuthGrant({
      idpUrl: info.idp,
      audience: ctx.authorizationServerUrl,
      resource: ctx.resourceUrl,
      idToken,
      clientId: info.idpClientId,
      clientSecret: secret,
      ...(ctx.scope === undefined ? {} : { scope: ctx.scope }),
      fetchFn: ctx.fetchFn
    })).jwtAuthGrant
  })
  const client = new Client({ name: 'xaa-example', version: '1.0.0' })
  await client.connect(new StreamableHTTPClientTransport(new URL(`${issuer}/mcp`), { authProvider }))
  try {
    return (await client.callTool({ name: 'whoami', arguments: {} })).structuredContent
  } finally {
    await client.close()
  }
}

async function main (): Promise<void> {
  const secret = process.env.MCP_OAUTH_XAA_SECRET
  if (secret === undefined || secret === '') throw new Error('set MCP_OAUTH_XAA_SECRET to the secret the server was started with')
  const issuer = process.env.MCP_OAUTH_ISSUER ?? `http://127.0.0.1:${process.env.PORT ?? '3000'}`
  const info = await crossAppAccessInfo(issuer)
  const idToken = await signIn(info, secret, (url) => console.log(`Open this URL and log in with any name:\n\n  ${url.href}\n`))
  console.log(JSON.stringify(await whoami(issuer, info, secret, idToken), null, 2))
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err)
    process.exitCode = 1
  })
}
