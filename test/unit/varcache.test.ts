import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalName, isTracked, setStatement } from '../../src/client/varcache.js';

test('setStatement quotes every value as a literal, E\'\' only where a backslash needs it', () => {
  assert.equal(setStatement('DateStyle', 'ISO'), "SET DateStyle='ISO';");
  assert.equal(setStatement('application_name', "it's"), "SET application_name='it''s';");
  assert.equal(setStatement('application_name', 'a\\b\'c'), "SET application_name=E'a\\\\b''c';");
  // A value cannot end the statement.
  assert.equal(setStatement('TimeZone', "UTC'; DROP TABLE t; --"), "SET TimeZone='UTC''; DROP TABLE t; --';");
  assert.equal(setStatement('application_name', ''), "SET application_name='';");
});

test('setStatement gives search_path back as the same list, one literal per schema', () => {
  assert.equal(setStatement('search_path', '"$user", public'), "SET search_path='$user','public';");
  assert.equal(setStatement('search_path', 'A_Schema,"Mixed ""Q""",public'), "SET search_path='a_schema','Mixed \"Q\"','public';");
  assert.equal(setStatement('search_path', '""'), "SET search_path='';");
  assert.equal(setStatement('search_path', ''), "SET search_path='';");
  assert.equal(setStatement('search_path', "x'; DROP TABLE t; --"), "SET search_path='x'';';");
});

test('parameters are one whatever their case; the canonical name is PostgreSQL\'s', () => {
  assert.equal(canonicalName('datestyle'), 'DateStyle');
  assert.equal(canonicalName('INTERVALSTYLE'), 'IntervalStyle');
  assert.equal(canonicalName('Search_Path'), 'search_path');
  assert.ok(isTracked('TIMEZONE', []));
  assert.ok(isTracked('intervalstyle', ['IntervalStyle']));
  assert.ok(!isTracked('search_path', ['IntervalStyle']));
});
