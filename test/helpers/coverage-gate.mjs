// Fails the test command when coverage of lib/ falls under the thresholds below.
// tap writes the summary; this reads it. Raise the numbers as the suite grows, never lower them.
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const THRESHOLDS = { statements: 94, branches: 86, functions: 94, lines: 94 }
/**
 * Higher floors where the protocol lives: the pure helpers (every rule is a unit test away) and
 * the token endpoint's wing (every grant, every refusal).
 */
const FOLDERS = {
  'lib/oauth/': { statements: 99.5, branches: 96, functions: 100, lines: 99.5 },
  'lib/token/': { statements: 96.5, branches: 89, functions: 100, lines: 96.5 }
}
const METRICS = Object.keys(THRESHOLDS)
const root = fileURLToPath(new URL('../../', import.meta.url))
const file = new URL('../../.tap/report/coverage-summary.json', import.meta.url)

let summary
try {
  summary = JSON.parse(readFileSync(file, 'utf8'))
} catch {
  console.error('coverage gate: no coverage summary found; did tap run?')
  process.exit(1)
}

/** Percentages of the files under `folder`, summed as the total is. */
function folderPct (folder) {
  const sums = Object.fromEntries(METRICS.map(m => [m, { covered: 0, total: 0 }]))
  for (const [path, entry] of Object.entries(summary)) {
    if (path === 'total' || !path.startsWith(root + folder)) continue
    for (const m of METRICS) {
      sums[m].covered += entry[m].covered
      sums[m].total += entry[m].total
    }
  }
  return Object.fromEntries(METRICS.map(m => [m, sums[m].total === 0 ? null : Math.round(10000 * sums[m].covered / sums[m].total) / 100]))
}

const failed = []
const report = []
const scopes = [['lib/', Object.fromEntries(METRICS.map(m => [m, summary.total[m].pct])), THRESHOLDS],
  ...Object.entries(FOLDERS).map(([folder, min]) => [folder, folderPct(folder), min])]
for (const [name, pct, min] of scopes) {
  for (const m of METRICS) {
    if (pct[m] === null) failed.push(`${name}: no files covered`)
    else if (pct[m] < min[m]) failed.push(`${name} ${m} ${pct[m]}% < ${min[m]}%`)
  }
  report.push(`${name} ${METRICS.map(m => `${m} ${pct[m]}%`).join(', ')}`)
}
if (failed.length > 0) {
  console.error(`coverage gate: FAILED (${[...new Set(failed)].join(', ')})`)
  process.exit(1)
}
console.log(`coverage gate: ok (${report.join('; ')})`)
