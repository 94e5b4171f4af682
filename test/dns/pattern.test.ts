import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileSelector, selectorProblem } from '../../src/dns/pattern.js';

test('matchName is exact, case-insensitive, trailing dot optional', () => {
  const m = compileSelector({ matchName: 'api.external-partner.com' });
  assert.ok(m('api.external-partner.com'));
  assert.ok(m('API.External-Partner.com.'));
  assert.ok(!m('x.api.external-partner.com'));
  assert.ok(!m('api.external-partner.co'));
});

test('matchPattern: * stays within a label; a lone * matches everything; **. spans labels', () => {
  const star = compileSelector({ matchPattern: '*' });
  assert.ok(star('anything.at.all') && star('.'));
  const sub = compileSelector({ matchPattern: '*.cilium.io' });
  assert.ok(sub('www.cilium.io'));
  assert.ok(!sub('a.b.cilium.io'), 'one label only');
  assert.ok(!sub('cilium.io'));
  const mid = compileSelector({ matchPattern: 'api-*.example.com' });
  assert.ok(mid('api-v2.example.com') && mid('api-.example.com'));
  assert.ok(!mid('api-v2.x.example.com'));
  const deep = compileSelector({ matchPattern: '**.cilium.io' });
  assert.ok(deep('a.cilium.io') && deep('a.b.c.cilium.io'));
  assert.ok(!deep('cilium.io'));
  const dots = compileSelector({ matchPattern: 'a.b' });
  assert.ok(!dots('axb'), 'dots are literal');
});

test('invalid selectors say why', () => {
  assert.match(selectorProblem({ matchName: 'bad name' }) ?? '', /may contain only/);
  assert.match(selectorProblem({ matchPattern: 'a.**.b' }) ?? '', /only as a leading/);
  assert.match(selectorProblem({}) ?? '', /exactly one/);
  assert.match(selectorProblem({ matchName: 'a', matchPattern: 'b' }) ?? '', /exactly one/);
  assert.equal(selectorProblem({ matchPattern: '*.example.com' }), undefined);
});
