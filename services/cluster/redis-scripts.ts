// The Lua scripts of the Redis ledger. Every change of ownership is one script, so Redis runs it atomically; no
// client ever reads a value and writes it back. ARGV[1] is the key prefix "tp:{<cluster>}:" (one hash tag, so all
// keys of a cluster live in one slot). Key layout: docs/cluster-state.md.

const PRELUDE = `
local P = ARGV[1]
local function group_meta(id)
  local m = redis.call('HGET', P..'groups', id)
  if not m then return nil end
  return cjson.decode(m)
end
local function drop_group(id)
  redis.call('HDEL', P..'groups', id)
  redis.call('DEL', P..'free:'..id, P..'owner:'..id, P..'glease:'..id)
end
local function reclaim(r)
  local n = 0
  for _, g in ipairs(redis.call('HKEYS', P..'groups')) do
    local owner = P..'owner:'..g
    local flat = redis.call('HGETALL', owner)
    for i = 1, #flat, 2 do
      if flat[i + 1] == r then
        redis.call('HDEL', owner, flat[i])
        redis.call('RPUSH', P..'free:'..g, flat[i])
        n = n + 1
      end
    end
  end
  return n
end
`;

/** ARGV: prefix, id, address, numPages, blockSize, ttlMs, minEpoch. Returns the new epoch. */
export const REGISTER_GROUP = `${PRELUDE}
local id = ARGV[2]
local n = tonumber(ARGV[4])
local epoch = redis.call('INCR', P..'epoch:'..id)
if epoch < tonumber(ARGV[7]) then
  epoch = tonumber(ARGV[7])
  redis.call('SET', P..'epoch:'..id, epoch)
end
local free = P..'free:'..id
redis.call('DEL', free, P..'owner:'..id)
local batch = {}
for p = 1, n - 1 do
  batch[#batch + 1] = p
  if #batch == 1000 then
    redis.call('RPUSH', free, unpack(batch))
    batch = {}
  end
end
if #batch > 0 then redis.call('RPUSH', free, unpack(batch)) end
local meta = cjson.encode({id = id, address = ARGV[3], numPages = n, blockSize = tonumber(ARGV[5]), epoch = epoch})
redis.call('HSET', P..'groups', id, meta)
redis.call('SET', P..'glease:'..id, epoch, 'PX', ARGV[6])
return epoch
`;

/** ARGV: prefix, id, epoch, ttlMs. Returns 1, or 0 when the group is gone or has another epoch. */
export const RENEW_GROUP = `${PRELUDE}
local m = group_meta(ARGV[2])
if not m or m.epoch ~= tonumber(ARGV[3]) then return 0 end
redis.call('SET', P..'glease:'..ARGV[2], ARGV[3], 'PX', ARGV[4])
return 1
`;

/** ARGV: prefix, id, epoch. */
export const REMOVE_GROUP = `${PRELUDE}
local m = group_meta(ARGV[2])
if m and m.epoch == tonumber(ARGV[3]) then drop_group(ARGV[2]) end
return 1
`;

/** ARGV: prefix, router, ttlMs. */
export const REGISTER_ROUTER = `${PRELUDE}
redis.call('SADD', P..'routers', ARGV[2])
redis.call('SET', P..'rlease:'..ARGV[2], 1, 'PX', ARGV[3])
return 1
`;

/** ARGV: prefix, router, ttlMs. Returns 1, or 0 when the lease had expired. */
export const RENEW_ROUTER = `${PRELUDE}
return redis.call('PEXPIRE', P..'rlease:'..ARGV[2], ARGV[3])
`;

/** ARGV: prefix, router. Returns the pages released. */
export const REMOVE_ROUTER = `${PRELUDE}
local n = reclaim(ARGV[2])
redis.call('SREM', P..'routers', ARGV[2])
redis.call('DEL', P..'rlease:'..ARGV[2])
return n
`;

/** ARGV: prefix, router, group, epoch, n. Returns the claimed pages. */
export const CLAIM = `${PRELUDE}
local r, g = ARGV[2], ARGV[3]
if redis.call('EXISTS', P..'rlease:'..r) == 0 then
  return redis.error_reply('ROUTER_LEASE_LOST router '..r..' has no live lease; register it again')
end
local m = group_meta(g)
if not m or m.epoch ~= tonumber(ARGV[4]) then
  return redis.error_reply('GROUP_EPOCH_STALE group '..g..' epoch '..ARGV[4]..' is not registered')
end
local pages = redis.call('LPOP', P..'free:'..g, tonumber(ARGV[5]))
if not pages then return {} end
local args = {}
for _, p in ipairs(pages) do
  args[#args + 1] = p
  args[#args + 1] = r
end
redis.call('HSET', P..'owner:'..g, unpack(args))
return pages
`;

/** ARGV: prefix, router, group, epoch, page... Returns the pages released. */
export const RELEASE = `${PRELUDE}
local r, g = ARGV[2], ARGV[3]
local m = group_meta(g)
if not m or m.epoch ~= tonumber(ARGV[4]) then return 0 end
local owner, free = P..'owner:'..g, P..'free:'..g
local n = 0
for i = 5, #ARGV do
  if redis.call('HGET', owner, ARGV[i]) == r then
    redis.call('HDEL', owner, ARGV[i])
    redis.call('RPUSH', free, ARGV[i])
    n = n + 1
  end
end
return n
`;

/** ARGV: prefix. Returns JSON {routers, pagesReclaimed, groups}. */
export const SWEEP = `${PRELUDE}
local routers, groups, pages = {}, {}, 0
for _, r in ipairs(redis.call('SMEMBERS', P..'routers')) do
  if redis.call('EXISTS', P..'rlease:'..r) == 0 then
    pages = pages + reclaim(r)
    redis.call('SREM', P..'routers', r)
    routers[#routers + 1] = r
  end
end
for _, g in ipairs(redis.call('HKEYS', P..'groups')) do
  if redis.call('EXISTS', P..'glease:'..g) == 0 then
    drop_group(g)
    groups[#groups + 1] = g
  end
end
return cjson.encode({routers = routers, pagesReclaimed = pages, groups = groups})
`;

/** ARGV: prefix. Returns a list of violations. */
export const CHECK = `${PRELUDE}
local out = {}
for _, g in ipairs(redis.call('HKEYS', P..'groups')) do
  local m = group_meta(g)
  local seen, nfree = {}, 0
  local owner = P..'owner:'..g
  for _, p in ipairs(redis.call('LRANGE', P..'free:'..g, 0, -1)) do
    local v = tonumber(p)
    if v < 1 or v >= m.numPages then out[#out + 1] = 'group '..g..': free page '..p..' outside the pool' end
    if seen[p] then out[#out + 1] = 'group '..g..': page '..p..' is free twice' end
    local o = redis.call('HGET', owner, p)
    if o then out[#out + 1] = 'group '..g..': page '..p..' is free and owned by '..o end
    seen[p] = true
    nfree = nfree + 1
  end
  local nowned = redis.call('HLEN', owner)
  if nfree + nowned ~= m.numPages - 1 then
    out[#out + 1] = 'group '..g..': free '..nfree..' + owned '..nowned..' != '..(m.numPages - 1)
  end
end
return out
`;

/** ARGV: prefix. Returns JSON [{info, free, owners}]. */
export const SNAPSHOT = `${PRELUDE}
local out = {}
for _, g in ipairs(redis.call('HKEYS', P..'groups')) do
  local owners = {}
  local flat = redis.call('HGETALL', P..'owner:'..g)
  for i = 1, #flat, 2 do
    local r = flat[i + 1]
    owners[r] = owners[r] or {}
    table.insert(owners[r], tonumber(flat[i]))
  end
  out[#out + 1] = {info = group_meta(g), free = redis.call('LLEN', P..'free:'..g), owners = owners}
end
return cjson.encode(out)
`;

/**
 * The cluster prefix index. ARGV: prefix, "stored"|"removed", "group@epoch", ttlMs, hash... Key pfx:<hash> is a
 * hash of "group@epoch" -> how many routers' caches hold the block there; it expires ttlMs after its last store.
 */
export const PREFIX_APPLY = `${PRELUDE}
local stored = ARGV[2] == 'stored'
for i = 5, #ARGV do
  local k = P..'pfx:'..ARGV[i]
  if stored then
    redis.call('HINCRBY', k, ARGV[3], 1)
    redis.call('PEXPIRE', k, ARGV[4])
  elseif redis.call('HINCRBY', k, ARGV[3], -1) <= 0 then
    redis.call('HDEL', k, ARGV[3])
  end
end
return 1
`;

/** ARGV: prefix, hash... Returns JSON {"group@epoch": leading blocks held}. */
export const PREFIX_LOOKUP = `${PRELUDE}
local runs = {}
local alive = redis.call('HKEYS', P..'pfx:'..ARGV[2])
for i = 2, #ARGV do
  local next = {}
  for _, g in ipairs(alive) do
    if redis.call('HEXISTS', P..'pfx:'..ARGV[i], g) == 1 then
      runs[g] = i - 1
      next[#next + 1] = g
    end
  end
  alive = next
  if #alive == 0 then break end
end
return cjson.encode(runs)
`;
