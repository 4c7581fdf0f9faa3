// The variable cache's SQL (PgBouncer varcache.c): which parameters a client keeps across the
// servers it is given, and the SET that gives a server one of them. Pure: strings in, SQL out.

/** Always kept equal between a client and its server; track_extra_parameters adds more. */
const TRACKED = ['client_encoding', 'datestyle', 'timezone', 'standard_conforming_strings', 'application_name'];

/** The reported parameters PostgreSQL spells in mixed case; every other one is lower case. */
const MIXED_CASE = ['DateStyle', 'IntervalStyle', 'TimeZone'];

/** The name PostgreSQL reports a parameter under (ParameterStatus), whatever case a client or
 * an ini used: the key of the variable cache, so `datestyle` and `DateStyle` are one parameter. */
export function canonicalName(name: string): string {
  const lower = name.toLowerCase();
  return MIXED_CASE.find((m) => m.toLowerCase() === lower) ?? lower;
}

/** Whether the pooler keeps `name` per client: the fixed ones and track_extra_parameters, any case. */
export function isTracked(name: string, extra: readonly string[]): boolean {
  const lower = name.toLowerCase();
  return TRACKED.includes(lower) || extra.some((e) => e.toLowerCase() === lower);
}

/**
 * The content of a client's parameters as one string (`name\0value\0…`, in the map's order;
 * neither can hold a NUL): two clients with equal signatures need the same SETs on any server,
 * so a server found in step with one signature needs none for it until its own parameters change
 * (ServerConn.varcacheFor). Made again only after the client's parameters change.
 */
export function signature(params: ReadonlyMap<string, string>): string {
  let sig = '';
  for (const [name, value] of params) sig += `${name}\0${value}\0`;
  return sig;
}

/**
 * `SET name=value;` for a value as a client sent it or a server reported it. The value is always
 * a quoted literal, so no value can end the statement: `'…'` with quotes doubled, or `E'…'` when
 * it holds a backslash (right whatever standard_conforming_strings is), as PgBouncer's
 * pg_quote_literal. search_path is a list whose elements the server reports quoted where they
 * need it (`"$user", public`): each element becomes a literal of its own, so the server gets the
 * same list back rather than one schema named after all of it.
 */
export function setStatement(name: string, value: string): string {
  const literal = name.toLowerCase() === 'search_path' ? identifierList(value).map(quoteLiteral).join(',') : quoteLiteral(value);
  return `SET ${name}=${literal === '' ? "''" : literal};`;
}

function quoteLiteral(value: string): string {
  if (!value.includes('\\')) return `'${value.replace(/'/g, "''")}'`;
  return `E'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
}

/** A comma list of identifiers as PostgreSQL's SplitIdentifierString reads it: `"quoted"` ones
 * keep their case (`""` is one `"`), bare ones are folded to lower case. */
function identifierList(text: string): string[] {
  const out: string[] = [];
  let i = 0;
  const n = text.length;
  for (;;) {
    while (i < n && /\s/.test(text[i]!)) i++;
    if (i >= n) return out;
    let name = '';
    if (text[i] === '"') {
      i++;
      while (i < n) {
        if (text[i] === '"' && text[i + 1] === '"') {
          name += '"';
          i += 2;
        } else if (text[i] === '"') {
          i++;
          break;
        } else name += text[i++];
      }
    } else {
      while (i < n && text[i] !== ',' && !/\s/.test(text[i]!)) name += text[i++];
      name = name.toLowerCase();
    }
    out.push(name);
    while (i < n && text[i] !== ',') i++;
    i++;
  }
}
