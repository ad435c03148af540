// node:test reporter for the HIL guest: one line per test, `PASS <suite > test>` or
// `FAIL <suite > test>: <first line of the error>`, which the harness counts. Failures also get the
// rest of the error (indented) so the host log says why.
export default async function* hilReporter(source) {
  const stack = [];
  for await (const ev of source) {
    const d = ev.data ?? {};
    if (ev.type === 'test:start') {
      stack[d.nesting] = d.name;
      stack.length = d.nesting + 1;
      continue;
    }
    if (ev.type !== 'test:pass' && ev.type !== 'test:fail') continue;
    if (d.details?.type === 'suite') {
      // A suite fails by itself only when a hook or its body threw outside the tests.
      const err = d.details?.error;
      if (ev.type === 'test:fail' && err && err.failureType !== 'subtestsFailed') {
        yield `FAIL ${[...stack.slice(0, d.nesting), d.name].join(' > ')} (suite): ${firstLine(err)}\n`;
      }
      continue;
    }
    const name = [...stack.slice(0, d.nesting), d.name].join(' > ');
    if (d.skip !== undefined || d.todo !== undefined) {
      // Nothing is skipped to go green: a skipped test counts as a failure here.
      yield `FAIL ${name}: skipped (${d.skip || d.todo || 'no reason'})\n`;
    } else if (ev.type === 'test:pass') {
      yield `PASS ${name} (${ms(d)})\n`;
    } else {
      const err = d.details?.error;
      yield `FAIL ${name}: ${firstLine(err)} (${ms(d)})\n`;
      const more = String(err?.cause?.stack ?? err?.stack ?? '').split('\n').slice(1, 8);
      for (const l of more) yield `    ${l}\n`;
    }
  }
}

function ms(d) {
  return `${Math.round(d.details?.duration_ms ?? 0)} ms`;
}

function firstLine(err) {
  const e = err?.cause ?? err;
  return String(e?.message ?? e ?? 'failed').split('\n')[0].slice(0, 400);
}
