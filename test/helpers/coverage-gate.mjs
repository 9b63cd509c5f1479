// Fails the test command when coverage of lib/ falls under the thresholds below.
// tap writes the summary; this reads it. Raise the numbers as the suite grows, never lower them.
import { readFileSync } from 'node:fs'

const THRESHOLDS = { statements: 94, branches: 86, functions: 94, lines: 94 }
const file = new URL('../../.tap/report/coverage-summary.json', import.meta.url)

let summary
try {
  summary = JSON.parse(readFileSync(file, 'utf8'))
} catch {
  console.error('coverage gate: no coverage summary found; did tap run?')
  process.exit(1)
}
const failed = []
for (const [metric, min] of Object.entries(THRESHOLDS)) {
  const pct = summary.total[metric].pct
  if (pct < min) failed.push(`${metric} ${pct}% < ${min}%`)
}
if (failed.length > 0) {
  console.error(`coverage gate: FAILED (${failed.join(', ')})`)
  process.exit(1)
}
console.log(`coverage gate: ok (${Object.keys(THRESHOLDS).map(m => `${m} ${summary.total[m].pct}%`).join(', ')})`)
