import { test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import * as root from '../lib/index.js'
import * as memory from '../lib/storage/memory/index.js'
import * as redis from '../lib/storage/redis/index.js'
import * as providers from '../lib/providers/index.js'

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))

test('the root entry exports the plugin, the error types, MemoryStore and generateKey; nothing internal', async (t) => {
  t.same(Object.keys(root).sort(), [
    'GrantRevokedError', 'MemoryStore', 'OAuthError', 'StoreUnavailableError', 'UpstreamError', 'UpstreamTokenError',
    'default', 'errors', 'generateKey', 'mcpOAuth'
  ])
  t.equal(root.default, root.mcpOAuth)
  t.equal(root.MemoryStore, memory.MemoryStore, 'the root MemoryStore is the one of fastify-mcp-oauth/memory')
  t.equal(root.UpstreamError, providers.UpstreamError, 'one UpstreamError, from the root and /providers')
})

test('the subpath entries export what the README names', async (t) => {
  t.same(Object.keys(memory).filter(k => k === 'MemoryStore'), ['MemoryStore'])
  t.ok(Object.keys(redis).includes('RedisStore'))
  t.same(['githubProvider', 'googleProvider', 'oidcProvider'].filter(k => !(k in providers)), [])
})

test("package.json's entry points and the type test's map name the same files", async (t) => {
  const pkg = JSON.parse(readFileSync(here('../package.json'), 'utf8')) as { exports: Record<string, { types?: string }> }
  const tsconfig = JSON.parse(readFileSync(here('types/tsconfig.json'), 'utf8')) as { compilerOptions: { paths: Record<string, string[]> } }
  const fromPackage = Object.entries(pkg.exports)
    .filter(([, target]) => typeof target === 'object' && target.types !== undefined)
    .map(([subpath, target]) => [`fastify-mcp-oauth${subpath.slice(1)}`, (target.types as string).replace('./dist/', '').replace(/\.d\.ts$/, '.ts')])
  const fromTypeTest = Object.entries(tsconfig.compilerOptions.paths)
    .map(([name, [target]]) => [name, (target as string).replace('../../', '')])
  t.same(fromTypeTest.sort(), fromPackage.sort())
})

test('the public types compile as an application uses them, and refuse the misuses the type test lists', async (t) => {
  const tsc = here('../node_modules/typescript/bin/tsc')
  const run = promisify(execFile)
  const result = await run(process.execPath, [tsc, '-p', here('types/tsconfig.json')], { cwd: here('..') })
    .then(() => ({ code: 0, output: '' }), (err: { code: number, stdout: string }) => ({ code: err.code, output: err.stdout }))
  t.equal(result.output, '', 'no type errors and no unused @ts-expect-error')
  t.equal(result.code, 0)
})

test("app.mcpOAuth exists while the plugin's own routes are added (an onRoute hook may read it)", async (t) => {
  const { default: Fastify } = await import('fastify')
  const app = Fastify()
  t.teardown(() => app.close())
  const seen: string[] = []
  app.addHook('onRoute', (route) => {
    if (route.url.startsWith('/oauth/')) seen.push(typeof (app as { mcpOAuth?: { authenticate?: unknown } }).mcpOAuth?.authenticate)
  })
  await app.register(root.mcpOAuth, { issuer: 'https://auth.example.com', resources: ['https://auth.example.com/mcp'] })
  await app.ready()
  t.ok(seen.length > 0)
  t.same([...new Set(seen)], ['function'])
})
