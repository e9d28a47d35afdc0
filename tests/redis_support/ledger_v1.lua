-- The window-log script as an earlier version of this crate ran it (every scalar a text field of
-- the hash, the rings from byte 0): tests/redis_store.rs checks that a state it wrote is taken
-- over by the current script, and that a process still running it is then refused.

-- One API key's quota ledger in Redis: the same decisions as src/ledger/key_ledger.rs,
-- window_log.rs and token_bucket.rs, on Redis's own clock (TIME), committed atomically.
--
-- KEYS[1]  the key's hash of scalars; KEYS[1 + i] the ring of limit i's window log.
-- ARGV     op, now_sec, now_usec ('' '' = Redis TIME), signature, 'epoch seq writer mine' known
--          (mine: the sequence number of this writer's latest write, 0 unknown), semantics
--          ('s' sliding | 'b' token bucket), guard_ns, horizon_ns, L, then L pairs
--          (count, window_ns), then the op's own arguments.
-- Times are ns since the state's origin (fields os/ou, seconds and µs of Redis time): exact
-- integers in Lua's doubles for 104 days of a state's life.

local H = KEYS[1]
local op = ARGV[1]
local sig = ARGV[4]
-- The epoch this process knows and the highest sequence number it saw of it ('' and 0: none);
-- then this process's writer id and the sequence number of its latest write (0: none known).
local known, known_seq, writer, mine = string.match(ARGV[5], '^(%S*) (%d+) (%S+) (%d+)$')
if known == nil then
  known, known_seq = string.match(ARGV[5], '^(%S*) (%d+)$')
  writer, mine = nil, '0'
end
known_seq = tonumber(known_seq)
mine = tonumber(mine)
local sem = ARGV[6]
local guard = tonumber(ARGV[7])
local horizon = tonumber(ARGV[8])
local L = tonumber(ARGV[9])
local A = 10 + 2 * L -- first argument of the op

local U32 = 4294967295
local FINE = 4194304 -- ticks per window, count <= EXACT
local COARSE = 1024
local EXACT = 1024

local function now_parts()
  if ARGV[2] ~= '' then return tonumber(ARGV[2]), tonumber(ARGV[3]) end
  local t = redis.call('TIME')
  return tonumber(t[1]), tonumber(t[2])
end

local function ceil_div(a, b)
  local c = math.floor(a / b)
  if c * b < a then c = c + 1 end
  if c > 0 and (c - 1) * b >= a then c = c - 1 end
  return c
end

-- The limits' fixed parameters, as window_log.rs / token_bucket.rs derive them.
local lim = {}
for i = 1, L do
  local count = tonumber(ARGV[8 + 2 * i])
  local window = tonumber(ARGV[9 + 2 * i])
  -- cache: the ring's entries read or written by this call, by position.
  local l = { count = count, window = window, key = KEYS[1 + i], cache = {} }
  if count <= EXACT then
    l.q = math.max(ceil_div(window, FINE), 1)
    l.max = count + 1
  else
    l.q = math.max(ceil_div(window, COARSE), 1)
    l.max = COARSE + 8
  end
  l.cap = l.max + 1 -- ring capacity in entries
  l.interval = ceil_div(window, math.max(count, 1))
  l.tol = math.max(l.interval * math.max(count - 1, 0) - guard, 0)
  lim[i] = l
end

-- State -----------------------------------------------------------------------------------
local S = {}
local flat = redis.call('HGETALL', H)
for i = 1, #flat, 2 do S[flat[i]] = flat[i + 1] end
local exists = S.ep ~= nil

-- The fields' numbers as read (or last written), so that save() formats only those that changed.
local loaded = {}
local function num(f, d)
  local v = S[f]
  if v == nil or v == '' then return d end
  local n = tonumber(v)
  loaded[f] = n
  return n
end

local sec, usec = now_parts()
local now = 0
if exists then
  now = ((sec - tonumber(S.os)) * 1000000 + (usec - tonumber(S.ou))) * 1000
  if now < 0 then now = 0 end
end

-- Scalars, loaded into locals and written back by save().
local st = {}
local function load()
  st.ls = num('ls', nil)
  st.bu = num('bu', 0)
  st.pc = num('pc', nil)
  st.cr = num('cr', nil)
  st.cs = num('cs', nil)
  st.sq = num('sq', 0)
  st.se = num('se', 0)
  for i = 1, L do
    local l = lim[i]
    l.b = num('b' .. i, 0)
    l.h = num('h' .. i, 0)
    l.n = num('n' .. i, 0)
    l.t = num('t' .. i, 0)
    l.f = num('f' .. i, nil)
    l.a = num('a' .. i, 0)
    l.l = num('l' .. i, nil)
    l.r = { { num('ri' .. i .. 'a', -1), num('rc' .. i .. 'a', 0) },
            { num('ri' .. i .. 'b', -1), num('rc' .. i .. 'b', 0) } }
  end
end

-- Whether a ring was written whole (SET drops its expiry): save() sets it again.
local rings_written = false

-- Fields are written as integers (exact below 2^53), and only those that changed.
local function field(v)
  if v == nil then return '' end
  return string.format('%.0f', v)
end

local function save()
  st.sq = st.sq + 1
  local f = {}
  local function put(name, v)
    if v ~= nil and loaded[name] == v then return end
    local text = field(v)
    if S[name] ~= text then
      f[#f + 1] = name
      f[#f + 1] = text
      S[name] = text
    end
    loaded[name] = v
  end
  put('sq', st.sq); put('ls', st.ls); put('bu', st.bu); put('pc', st.pc)
  put('cr', st.cr); put('cs', st.cs)
  if st.se > 0 then put('se', st.se) end
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      put('a' .. i, l.a); put('l' .. i, l.l)
    else
      put('b' .. i, l.b); put('h' .. i, l.h); put('n' .. i, l.n); put('t' .. i, l.t)
      put('f' .. i, l.f)
    end
    put('ri' .. i .. 'a', l.r[1][1]); put('rc' .. i .. 'a', l.r[1][2])
    put('ri' .. i .. 'b', l.r[2][1]); put('rc' .. i .. 'b', l.r[2][2])
  end
  -- The sequence number of this writer's latest write: a rollback that lost it is seen by the
  -- writer even when others wrote since (their writes brought the number back up).
  if writer ~= nil then
    f[#f + 1] = 'p:' .. writer
    f[#f + 1] = st.sq
  end
  -- Kept as long as any call counts: the latest instant it holds plus the longest window and
  -- the guard, and a second. Extended two seconds at a time, so most calls set no expiry.
  local last = math.max(st.ls or 0, st.bu, st.cs or 0)
  local needed = last + horizon + 1000000000
  local ex = num('ex', nil)
  if ex == nil or needed > ex or rings_written then
    if ex == nil or needed > ex then
      ex = needed + 2000000000
      put('ex', ex)
    end
    local ttl = math.floor((ex - now) / 1000000) + 1
    redis.call('PEXPIRE', H, ttl)
    for i = 1, L do redis.call('PEXPIRE', lim[i].key, ttl) end
  end
  if #f > 0 then redis.call('HSET', H, unpack(f)) end
end

-- Ring of (tick, calls) entries, oldest first ------------------------------------------------
local function ring_get(l, k)
  local pos = (l.h + k) % l.cap
  local hit = l.cache[pos]
  if hit then return hit[1], hit[2] end
  local off = pos * 8
  local s = redis.call('GETRANGE', l.key, off, off + 7)
  local tick, calls = struct.unpack('>I4I4', s)
  l.cache[pos] = { tick, calls }
  return tick, calls
end

-- A ring is allocated once at its full size: grown by SETRANGE, Redis would keep up to twice
-- the bytes (its strings grow greedily).
local function ring_alloc(l)
  if l.alloc then return end
  l.alloc = true
  if redis.call('STRLEN', l.key) < l.cap * 8 then
    local s = redis.call('GET', l.key) or ''
    redis.call('SET', l.key, s .. string.rep('\0', l.cap * 8 - #s))
    rings_written = true
  end
end

local function ring_set(l, k, tick, calls)
  ring_alloc(l)
  local pos = (l.h + k) % l.cap
  redis.call('SETRANGE', l.key, pos * 8, struct.pack('>I4I4', tick, calls))
  l.cache[pos] = { tick, calls }
end

local function ring_all(l)
  local out = {}
  if l.n == 0 then return out end
  local s = redis.call('GET', l.key) or ''
  for k = 0, l.n - 1 do
    local off = ((l.h + k) % l.cap) * 8
    local tick, calls = struct.unpack('>I4I4', s, off + 1)
    out[#out + 1] = { tick, calls }
  end
  return out
end

local function ring_write(l, entries)
  local parts = {}
  for k = 1, #entries do parts[k] = struct.pack('>I4I4', entries[k][1], entries[k][2]) end
  redis.call('SET', l.key, table.concat(parts) .. string.rep('\0', (l.cap - #entries) * 8))
  l.alloc = true
  l.cache = {}
  rings_written = true
  l.h = 0
  l.n = #entries
end

local function pop_front(l)
  l.h = (l.h + 1) % l.cap
  l.n = l.n - 1
  if l.n == 0 then l.h = 0 end
end

-- recent_calls.rs
local function recent_add(l, t)
  local index = math.floor(t / math.max(l.window, 1))
  local slot = l.r[(index % 2) + 1]
  if slot[1] ~= index then slot[1] = index; slot[2] = 0 end
  slot[2] = slot[2] + 1
end

local function recent_remove(l, t)
  local index = math.floor(t / math.max(l.window, 1))
  for j = 1, 2 do
    if l.r[j][1] == index then l.r[j][2] = math.max(l.r[j][2] - 1, 0); return end
  end
end

-- window_log.rs
local function log_earliest(l)
  local nth = nil
  if l.t >= l.count then
    if l.n > 0 then nth = (l.b + ring_get(l, 0)) * l.q end
  else
    nth = l.f
  end
  if nth == nil then return 0 end
  return nth + l.window
end

local function rebase(l, tick)
  local entries = ring_all(l)
  local front_abs = tick
  if #entries > 0 then front_abs = l.b + entries[1][1] end
  if tick - front_abs > U32 then
    ring_write(l, { { 0, math.min(l.t, U32) } })
    l.b = tick
    return
  end
  local shift = front_abs - l.b
  for k = 1, #entries do entries[k][1] = entries[k][1] - shift end
  ring_write(l, entries)
  l.b = front_abs
end

local function trim(l, t_now)
  while l.n > 0 do
    local tick, calls = ring_get(l, 0)
    if l.t - calls >= l.count then
      local t = (l.b + tick) * l.q
      if l.f == nil or t > l.f then l.f = t end
      l.t = l.t - calls
      pop_front(l)
    else
      break
    end
  end
  while l.n > 0 do
    local tick, calls = ring_get(l, 0)
    -- (A call holds the limit until it left the window by the guard, as in window_log.rs.)
    if (l.b + tick) * l.q + l.window + guard <= t_now then
      l.t = l.t - calls
      pop_front(l)
    else
      break
    end
  end
  while l.n > l.max do
    local _, calls = ring_get(l, 0)
    pop_front(l)
    local tick2, calls2 = ring_get(l, 0)
    ring_set(l, 0, tick2, math.min(calls2 + calls, U32))
  end
end

local function log_record(l, t, t_now)
  local tick = ceil_div(t, l.q)
  if l.n == 0 then l.b = tick end
  local rel = math.max(tick - l.b, 0)
  if rel > U32 then
    rebase(l, tick)
    rel = math.max(tick - l.b, 0)
  end
  rel = math.min(rel, U32)
  local pushed = true
  if l.n > 0 then
    local btick, bcalls = ring_get(l, l.n - 1)
    if btick >= rel and bcalls < U32 then
      ring_set(l, l.n - 1, btick, bcalls + 1)
      pushed = false
    end
  end
  if pushed then
    ring_set(l, l.n, rel, 1)
    l.n = l.n + 1
  end
  l.t = l.t + 1
  recent_add(l, t)
  trim(l, t_now)
end

local function log_forget(l, t)
  local tick = ceil_div(t, l.q)
  recent_remove(l, t)
  local rel = tick - l.b
  if rel < 0 or rel > U32 then return end
  local entries = ring_all(l)
  for k = #entries, 1, -1 do
    if entries[k][1] == rel then
      entries[k][2] = entries[k][2] - 1
      if entries[k][2] == 0 then table.remove(entries, k) end
      l.t = l.t - 1
      ring_write(l, entries)
      return
    end
  end
end

-- key_ledger.rs
local function limit_earliest(l)
  if sem == 'b' then return math.max(l.a - l.tol, 0) end
  local e = log_earliest(l)
  if e == 0 then return 0 end
  return e + guard
end

local function earliest(t_now)
  local t = math.max(t_now, st.bu)
  if st.ls ~= nil then
    t = math.max(t, st.ls)
    if st.pc ~= nil then t = math.max(t, st.ls + st.pc) end
  end
  for i = 1, L do t = math.max(t, limit_earliest(lim[i])) end
  if st.cr ~= nil and st.cr == 0 and t < st.cs then t = st.cs end
  return t
end

local function commit(t, t_now)
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      l.a = math.max(l.a, t) + l.interval
      l.l = t
      recent_add(l, t)
    else
      log_record(l, t, t_now)
    end
  end
  st.ls = t
  if st.cr ~= nil then
    if t >= st.cs then st.cr = nil; st.cs = nil else st.cr = math.max(st.cr - 1, 0) end
  end
end

local function refund(t)
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      recent_remove(l, t)
      if l.l == t then l.a = math.max(l.a - l.interval, t); l.l = nil end
    else
      log_forget(l, t)
    end
  end
  if st.cr ~= nil and t < st.cs then st.cr = st.cr + 1 end
end

local function block(until_ns) st.bu = math.max(st.bu, until_ns) end

-- A new state (Redis lost the old one) hands out no slot for settle_ns: every process of the
-- fleet tells it its own calls first (each checks the state more often than that), and no slot
-- is computed before they did. A reservation in that time commits nothing and is told how long
-- to wait; plans see the settle as a block.
local function settle(settle_ns)
  if settle_ns <= 0 then return end
  st.se = math.max(st.se, now + settle_ns)
  block(st.se)
end

-- Creation and re-seeding ----------------------------------------------------------------
local function create(epoch, back_ns)
  -- The origin lies back_ns before now, so that earlier calls have a place on the scale.
  local back_us = ceil_div(back_ns, 1000)
  local osec = sec - math.floor(back_us / 1000000)
  local ousec = usec - (back_us % 1000000)
  if ousec < 0 then ousec = ousec + 1000000; osec = osec - 1 end
  for i = 1, L do redis.call('DEL', lim[i].key) end
  redis.call('DEL', H)
  redis.call('HSET', H, 'sig', sig, 'ep', epoch, 'os', field(osec), 'ou', field(ousec))
  S = { sig = sig, ep = epoch, os = field(osec), ou = field(ousec) }
  loaded = {}
  now = back_us * 1000
  exists = true
  load()
end

-- Calls given by their offsets before now (ns; negative: a slot still ahead), merged in time
-- order with the calls the state holds.
local function merge_times(times, fresh)
  if #times == 0 then return end
  table.sort(times)
  local newest = times[#times]
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      if fresh then
        for _, t in ipairs(times) do l.a = math.max(l.a, t) + l.interval; recent_add(l, t) end
        l.l = newest
      else
        for _, t in ipairs(times) do
          local index = math.floor(t / math.max(l.window, 1))
          local slot = l.r[(index % 2) + 1]
          if slot[1] == index then slot[2] = slot[2] + 1 end
        end
      end
      -- token_bucket.rs drained_after: empty just after the newest.
      l.a = math.max(l.a, newest + l.interval * l.count)
    else
      -- Rebuilt: the calls it holds and the new ones, recorded again in time order.
      local old = ring_all(l)
      local all = {}
      for _, e in ipairs(old) do
        for _ = 1, e[2] do all[#all + 1] = (l.b + e[1]) * l.q end
      end
      for _, t in ipairs(times) do
        all[#all + 1] = t
        if not fresh then
          local index = math.floor(t / math.max(l.window, 1))
          local slot = l.r[(index % 2) + 1]
          if slot[1] == index then slot[2] = slot[2] + 1 end
        end
      end
      table.sort(all)
      local recent = l.r
      ring_write(l, {})
      l.t = 0
      for _, t in ipairs(all) do log_record(l, t, now) end
      if not fresh then l.r = recent end
    end
  end
  if st.ls == nil or newest > st.ls then st.ls = newest end
end

-- ARGV[j] as a call's offset before now (ns; negative: ahead), and whether it is marked 'L':
-- a call that may go out only when the process's next reservation returns.
local function offset_at(j)
  local a = ARGV[j]
  if string.sub(a, 1, 1) == 'L' then return tonumber(string.sub(a, 2)), true end
  return tonumber(a), false
end

-- Calls given by their offsets before now. A call that still counts but was made before the
-- state's origin (a state begun by a process with no calls of its own) is recorded at the
-- origin: later than it was, so its windows end late, never early. A marked call is recorded
-- no earlier than the settle's end (its process's reservations wait for it).
local function merge_calls(first, fresh)
  local times = {}
  for j = first, #ARGV do
    local offset, late = offset_at(j)
    if offset < horizon then
      local t = math.max(now - offset, 0)
      if late then t = math.max(t, st.se) end
      times[#times + 1] = t
    end
  end
  merge_times(times, fresh)
end

-- The ops --------------------------------------------------------------------------------
local function check_sig()
  if exists and S.sig ~= sig then
    return redis.error_reply('FABRAIX_QUOTA_MISMATCH stored "' .. tostring(S.sig) ..
      '", this process "' .. sig .. '"')
  end
  return nil
end

local function state_reply()
  local out = { 'ok', S.ep, st.sq, now }
  for i = 1, L do
    local l = lim[i]
    local entries = ring_all(l)
    local parts = {}
    for k = 1, #entries do parts[k] = struct.pack('>I4I4', entries[k][1], entries[k][2]) end
    out[#out + 1] = table.concat(parts)
  end
  local hf = redis.call('HGETALL', H)
  for k = 1, #hf do out[#out + 1] = hf[k] end
  return out
end

local bad = check_sig()
if bad then return bad end

-- How far back the origin goes for calls at offsets from ARGV[first] on: the horizon if any
-- still counts (as key_ledger.rs with_earlier_calls does), else none.
local function back_for(first)
  for j = first, #ARGV do
    if offset_at(j) < horizon then return horizon end
  end
  return 0
end

if op == 'register' then
  -- ARGV[A] new epoch, ARGV[A+1] settle_ns, then earlier calls' offsets.
  if not exists then
    create(ARGV[A], back_for(A + 2))
    settle(tonumber(ARGV[A + 1]))
    merge_calls(A + 2, true)
    save()
  else
    load()
  end
  return { 'ok', S.ep, st.sq, now }
end

if op == 'seed' then
  -- ARGV[A] new epoch, ARGV[A+1] settle_ns, ARGV[A+2] '1' to replace the state when its epoch
  -- is the known one (a rollback), then the calls' offsets.
  if not exists or (ARGV[A + 2] == '1' and S.ep == known) then
    create(ARGV[A], back_for(A + 3))
    settle(tonumber(ARGV[A + 1]))
    merge_calls(A + 3, true)
    save()
  else
    load()
    if S.ep ~= known then
      merge_calls(A + 3, false)
      save()
    end
  end
  return { 'ok', S.ep, st.sq, now }
end

if not exists or S.ep ~= known then
  return { 'seed', S.ep or '' }
end
load()
-- A window log evicted or deleted apart from the hash: the state is incomplete, and is seeded
-- again as after a rollback. A ring that exists was written at its full size at once.
local holding = {}
for i = 1, L do
  if lim[i].n > 0 then holding[#holding + 1] = lim[i].key end
end
if #holding > 0 then
  if redis.call('EXISTS', unpack(holding)) < #holding then return { 'rollback', S.ep } end
  for i = 1, L do
    if lim[i].n > 0 then lim[i].alloc = true end
  end
end
-- Writes this process saw or made are gone (a failover to a replica that had not seen them).
if st.sq < known_seq or (writer ~= nil and mine > 0 and num('p:' .. writer, 0) < mine) then
  return { 'rollback', S.ep }
end

if op == 'check' then
  -- The state is there, of the epoch this process knows, and not rolled back.
  return { 'ok', S.ep, st.sq, now }
end

if op == 'reserve' then
  -- ARGV[A]: how many slots (1 ..), committed one after another; none while the state settles.
  if now < st.se then return { 'settle', st.se - now } end
  local k = tonumber(ARGV[A])
  local out = { 'ok', S.ep, 0, now }
  for _ = 1, k do
    local t = earliest(now)
    commit(t, now)
    out[#out + 1] = t
  end
  save()
  out[3] = st.sq
  return out
elseif op == 'read' then
  return state_reply()
elseif op == 'late' then
  -- Calls recorded at these times went out as late as now: moved to now.
  local c = tonumber(ARGV[A])
  local times = {}
  for j = 1, c do
    refund(tonumber(ARGV[A + j]))
    times[j] = now
  end
  merge_times(times, false)
elseif op == 'refund' then
  refund(tonumber(ARGV[A]))
elseif op == 'block' then
  block(now + math.max(tonumber(ARGV[A]), 0))
elseif op == 'cap' then
  local remaining = tonumber(ARGV[A])
  local reset = now + math.max(tonumber(ARGV[A + 1]), 0)
  if remaining == 0 then
    block(reset)
  elseif st.cr ~= nil and st.cs >= reset then
    st.cr = math.min(st.cr, remaining)
  else
    st.cr = remaining
    st.cs = reset
  end
elseif op == 'pace' then
  local p = tonumber(ARGV[A])
  if p > 0 then st.pc = p else st.pc = nil end
else
  return redis.error_reply('FABRAIX_UNKNOWN_OP ' .. op)
end
save()
return { 'ok', S.ep, st.sq, now }
