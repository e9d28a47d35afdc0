-- One API key's quota ledger in Redis: the same decisions as src/ledger/key_ledger.rs,
-- window_log.rs and token_bucket.rs, on Redis's own clock (TIME), committed atomically.
--
-- KEYS[1]  the key's hash (identity, writers); KEYS[1 + i] the ring of limit i's window log
--          (ring 1 led by the packed scalars: see State below).
-- ARGV     op, now_sec, now_usec ('' '' = Redis TIME), signature, 'epoch seq writer mine' known
--          (mine: the sequence number of this writer's latest write, 0 unknown), semantics
--          ('s' sliding | 'b' token bucket), guard_ns, horizon_ns, L, then L pairs
--          (count, window_ns), then the op's own arguments.
-- Times are ns since the state's origin (fields os/ou, seconds and µs of Redis time): exact
-- integers in Lua's doubles for 104 days; a state is replaced after 52 (MAX_AGE).

-- Globals read once: a global's lookup costs about as much as a call here.
local floor, max, min = math.floor, math.max, math.min
local call, spack, sunpack = redis.call, struct.pack, struct.unpack

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
  local t = call('TIME')
  return tonumber(t[1]), tonumber(t[2])
end

local function ceil_div(a, b)
  local c = floor(a / b)
  if c * b < a then c = c + 1 end
  if c > 0 and (c - 1) * b >= a then c = c - 1 end
  return c
end

-- The limits' fixed parameters, as window_log.rs / token_bucket.rs derive them.
local lim = {}
for i = 1, L do
  local count = tonumber(ARGV[8 + 2 * i])
  local window = tonumber(ARGV[9 + 2 * i])
  -- ct, cc: the ticks and calls of the ring's entries written by this call, by position.
  -- off: where the ring's entries begin in its string (ring 1 holds the scalars before them).
  local l = { count = count, window = window, key = KEYS[1 + i], ct = {}, cc = {}, off = 0 }
  if count <= EXACT then
    l.q = max(ceil_div(window, FINE), 1)
    l.max = count + 1
  else
    l.q = max(ceil_div(window, COARSE), 1)
    l.max = COARSE + 8
  end
  l.cap = l.max + 1 -- ring capacity in entries
  l.interval = ceil_div(window, max(count, 1))
  l.tol = max(l.interval * max(count - 1, 0) - guard, 0)
  lim[i] = l
end

-- State -----------------------------------------------------------------------------------
-- The hash holds the state's identity, written once at its creation (sig: LAYOUT and the
-- signature; ep: the epoch; os, ou: the origin) and, per writer, the sequence number of its
-- latest write (p:<writer>). The scalars are packed at the start of ring 1's string (HEAD
-- bytes: the doubles of PACK, exact integers, NONE for none), before its entries: one GETRANGE
-- reads them and one SETRANGE writes them, and the hash stays small (Redis's compact encoding).
-- A reservation reads and writes the few ring entries it needs with GETRANGE and SETRANGE (a
-- GET of a whole ring into Lua costs more than ten of them).
local LAYOUT = 'L2 '
local NONE = -1
local PACK = '>' .. string.rep('d', 8 + 11 * L)
local HEAD = (8 + 11 * L) * 8
lim[1].off = HEAD
local mine_field = 'p:' .. (writer or '')
local head = call('HMGET', H, 'sig', 'ep', 'os', 'ou', mine_field, 'pw')
local S = { sig = head[1], ep = head[2], os = head[3], ou = head[4] }
local exists = S.ep ~= false
local mine_seq = tonumber(head[5]) or 0
local mine_listed = head[5] ~= false
-- The highest sequence number of a writer field pruned (see prune_writers): a writer whose
-- latest write is at most that and whose field is gone was pruned, not rolled back.
local pruned_below = tonumber(head[6]) or 0

local sec, usec = now_parts()
local now = 0
if exists then
  now = ((sec - tonumber(S.os)) * 1000000 + (usec - tonumber(S.ou))) * 1000
  if now < 0 then now = 0 end
end

-- A state lives at most MAX_AGE ns (2^52 ns, 52 days) from its origin: past 2^53 ns its times
-- would no longer be exact in Lua's doubles. An older state is dropped as if Redis had lost
-- it, and the fleet seeds a new one with its calls that still count (as after a restart).
local MAX_AGE = 4503599627370496
if exists and now > MAX_AGE then
  for i = 1, L do call('DEL', KEYS[1 + i]) end
  call('DEL', H)
  S, exists, now = {}, false, 0
  mine_seq, mine_listed, pruned_below = 0, false, 0
end

local function some(v)
  if v < 0 then return nil end
  return v
end

-- A ring's string, read whole (one GET) by the ops that need every entry; entries written since
-- are in l.ct, l.cc (and in Redis).
local function ring_bytes(l)
  if l.s == nil then l.s = call('GET', l.key) or '' end
  return l.s
end

-- Scalars, loaded into st and lim[i] and written back by save(). S.incomplete: the state's
-- hash is there but its scalars are not (ring 1 evicted or deleted apart from it).
local st = {}
local function load()
  local s = nil
  if not S.fresh then
    local l = lim[1]
    if l.s then s = string.sub(l.s, 1, HEAD) else s = call('GETRANGE', l.key, 0, HEAD - 1) end
    if #s < HEAD then
      S.incomplete = true
      s = nil
    end
  end
  if not s then
    st.ls, st.bu, st.pc, st.cr, st.cs, st.sq, st.se, st.ex = nil, 0, nil, nil, nil, 0, 0, nil
    for i = 1, L do
      local l = lim[i]
      l.b, l.h, l.n, l.t, l.f, l.a, l.l = 0, 0, 0, 0, nil, 0, nil
      l.r = { { -1, 0 }, { -1, 0 } }
    end
    return
  end
  local v = { sunpack(PACK, s) }
  st.ls, st.bu, st.pc, st.cr = some(v[1]), v[2], some(v[3]), some(v[4])
  st.cs, st.sq, st.se, st.ex = some(v[5]), v[6], v[7], some(v[8])
  for i = 1, L do
    local l, j = lim[i], 8 + 11 * (i - 1)
    l.b, l.h, l.n, l.t = v[j + 1], v[j + 2], v[j + 3], v[j + 4]
    l.f, l.a, l.l = some(v[j + 5]), v[j + 6], some(v[j + 7])
    l.r = { { v[j + 8], v[j + 9] }, { v[j + 10], v[j + 11] } }
  end
end

-- Whether a ring was written whole (SET drops its expiry): save() sets it again.
local rings_written = false

-- Written as integers (exact below 2^53) where text is needed (a read's answer).
local function field(v)
  if v == nil then return '' end
  return string.format('%.0f', v)
end

local function packed()
  local v = { st.ls or NONE, st.bu, st.pc or NONE, st.cr or NONE, st.cs or NONE, st.sq, st.se,
              st.ex or NONE }
  for i = 1, L do
    local l, j = lim[i], 8 + 11 * (i - 1)
    v[j + 1], v[j + 2], v[j + 3], v[j + 4] = l.b, l.h, l.n, l.t
    v[j + 5], v[j + 6], v[j + 7] = l.f or NONE, l.a, l.l or NONE
    v[j + 8], v[j + 9], v[j + 10], v[j + 11] = l.r[1][1], l.r[1][2], l.r[2][1], l.r[2][2]
  end
  return spack(PACK, unpack(v))
end

-- Writer fields kept: past WRITERS_MAX (checked when a writer's field is new, once per process
-- and state), the oldest writers' fields are dropped down to WRITERS_KEPT, and 'pw' keeps the
-- highest sequence number dropped. The hash stays bounded however many processes come and go.
local WRITERS_MAX, WRITERS_KEPT = 64, 32
local function prune_writers()
  if call('HLEN', H) <= WRITERS_MAX + 5 then return end
  local flat = call('HGETALL', H)
  local seqs = {}
  for i = 1, #flat, 2 do
    if string.sub(flat[i], 1, 2) == 'p:' then
      seqs[#seqs + 1] = { tonumber(flat[i + 1]) or 0, flat[i] }
    end
  end
  if #seqs <= WRITERS_MAX then return end
  table.sort(seqs, function(x, y) return x[1] < y[1] end)
  local drop, highest = {}, pruned_below
  for i = 1, #seqs - WRITERS_KEPT do
    drop[#drop + 1] = seqs[i][2]
    highest = max(highest, seqs[i][1])
  end
  call('HDEL', H, unpack(drop))
  call('HSET', H, 'pw', field(highest))
  pruned_below = highest
end

local function save()
  st.sq = st.sq + 1
  -- Kept as long as any call counts: the latest instant it holds plus the longest window and
  -- the guard, and a second. Extended two seconds at a time, so most calls set no expiry.
  local last = max(st.ls or 0, st.bu, st.cs or 0)
  local needed = last + horizon + 1000000000
  local extend = st.ex == nil or needed > st.ex
  if extend then st.ex = needed + 2000000000 end
  -- The scalars (the new expiry among them) are written before the expiry is set: the write
  -- may create ring 1 (a new state, a token bucket's rings), and a key created after its
  -- PEXPIRE would never expire.
  call('SETRANGE', lim[1].key, 0, packed())
  if extend or rings_written then
    local ttl = floor((st.ex - now) / 1000000) + 1
    call('PEXPIRE', H, ttl)
    for i = 1, L do call('PEXPIRE', lim[i].key, ttl) end
  end
  -- The sequence number of this writer's latest write: a rollback that lost it is seen by the
  -- writer even when others wrote since (their writes brought the number back up).
  if writer ~= nil then
    call('HSET', H, mine_field, st.sq)
    if not mine_listed then prune_writers() end
  end
end

-- Ring of (tick, calls) entries, oldest first, from byte l.off of its string ---------------
local function ring_at(l, pos)
  local tick = l.ct[pos]
  if tick then return tick, l.cc[pos] end
  local at = l.off + pos * 8
  local s = l.s
  if s == nil then
    s = call('GETRANGE', l.key, at, at + 7)
    at = 0
  end
  if #s < at + 8 then return 0, 0 end
  local calls
  tick, calls = sunpack('>I4I4', s, at + 1)
  if l.s == nil then l.ct[pos], l.cc[pos] = tick, calls end
  return tick, calls
end

local function ring_get(l, k)
  return ring_at(l, (l.h + k) % l.cap)
end

-- A ring is allocated once at its full size: grown by SETRANGE, Redis would keep up to twice
-- the bytes (its strings grow greedily).
local function ring_alloc(l)
  if l.alloc then return end
  l.alloc = true
  local size = l.off + l.cap * 8
  if (l.s and #l.s or call('STRLEN', l.key)) < size then
    local s = ring_bytes(l)
    l.s = s .. string.rep('\0', size - #s)
    call('SET', l.key, l.s)
    rings_written = true
  end
end

local function ring_set(l, k, tick, calls)
  ring_alloc(l)
  local pos = (l.h + k) % l.cap
  call('SETRANGE', l.key, l.off + pos * 8, spack('>I4I4', tick, calls))
  l.ct[pos], l.cc[pos] = tick, calls
end

local function ring_all(l)
  local out = {}
  ring_bytes(l)
  for k = 0, l.n - 1 do
    local tick, calls = ring_get(l, k)
    out[#out + 1] = { tick, calls }
  end
  return out
end

local function ring_write(l, entries)
  local parts = {}
  for k = 1, #entries do parts[k] = spack('>I4I4', entries[k][1], entries[k][2]) end
  -- (Ring 1's scalars are written by save(), which follows every write.)
  l.s = string.rep('\0', l.off) .. table.concat(parts) .. string.rep('\0', (l.cap - #entries) * 8)
  call('SET', l.key, l.s)
  l.alloc = true
  l.ct, l.cc = {}, {}
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
  local index = floor(t / max(l.window, 1))
  local slot = l.r[(index % 2) + 1]
  if slot[1] ~= index then slot[1] = index; slot[2] = 0 end
  slot[2] = slot[2] + 1
end

local function recent_remove(l, t)
  local index = floor(t / max(l.window, 1))
  for j = 1, 2 do
    if l.r[j][1] == index then l.r[j][2] = max(l.r[j][2] - 1, 0); return end
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
    ring_write(l, { { 0, min(l.t, U32) } })
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
    ring_set(l, 0, tick2, min(calls2 + calls, U32))
  end
end

local function log_record(l, t, t_now)
  local tick = ceil_div(t, l.q)
  if l.n == 0 then l.b = tick end
  local rel = max(tick - l.b, 0)
  if rel > U32 then
    rebase(l, tick)
    rel = max(tick - l.b, 0)
  end
  rel = min(rel, U32)
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
  if sem == 'b' then return max(l.a - l.tol, 0) end
  local e = log_earliest(l)
  if e == 0 then return 0 end
  return e + guard
end

local function earliest(t_now)
  local t = max(t_now, st.bu)
  if st.ls ~= nil then
    t = max(t, st.ls)
    if st.pc ~= nil then t = max(t, st.ls + st.pc) end
  end
  for i = 1, L do t = max(t, limit_earliest(lim[i])) end
  if st.cr ~= nil and st.cr == 0 and t < st.cs then t = st.cs end
  return t
end

local function commit(t, t_now)
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      l.a = max(l.a, t) + l.interval
      l.l = t
      recent_add(l, t)
    else
      log_record(l, t, t_now)
    end
  end
  st.ls = t
  if st.cr ~= nil then
    if t >= st.cs then st.cr = nil; st.cs = nil else st.cr = max(st.cr - 1, 0) end
  end
end

local function refund(t)
  for i = 1, L do
    local l = lim[i]
    if sem == 'b' then
      recent_remove(l, t)
      if l.l == t then l.a = max(l.a - l.interval, t); l.l = nil end
    else
      log_forget(l, t)
    end
  end
  if st.cr ~= nil and t < st.cs then st.cr = st.cr + 1 end
end

-- A block raised is told to the fleet at once, on the key's channel (in its hash tag: KEYS[1]
-- less its ':h', then ':blocks'): '<epoch> <delay_ns>', the block's end as a delay from this
-- script's now (the fleet's clocks never meet). Every 'ok' answer carries it too (ok_head).
-- A PUBLISH the server refuses (an ACL without the channel) is left out: the answers tell it.
local function block(until_ns)
  if until_ns <= st.bu then return end
  st.bu = until_ns
  local channel = string.sub(H, 1, #H - 2) .. ':blocks'
  redis.pcall('PUBLISH', channel, S.ep .. ' ' .. field(max(until_ns - now, 0)))
end

-- A new state (Redis lost the old one) hands out no slot for settle_ns: every process of the
-- fleet tells it its own calls first (each checks the state more often than that), and no slot
-- is computed before they did. A reservation in that time commits nothing and is told how long
-- to wait; plans see the settle as a block.
local function settle(settle_ns)
  if settle_ns <= 0 then return end
  st.se = max(st.se, now + settle_ns)
  block(st.se)
end

-- Creation and re-seeding ----------------------------------------------------------------
local function create(epoch, back_ns)
  -- The origin lies back_ns before now, so that earlier calls have a place on the scale.
  local back_us = ceil_div(back_ns, 1000)
  local osec = sec - floor(back_us / 1000000)
  local ousec = usec - (back_us % 1000000)
  if ousec < 0 then ousec = ousec + 1000000; osec = osec - 1 end
  for i = 1, L do call('DEL', lim[i].key) end
  call('DEL', H)
  mine_seq, mine_listed, pruned_below = 0, false, 0
  call('HSET', H, 'sig', LAYOUT .. sig, 'ep', epoch, 'os', field(osec), 'ou', field(ousec))
  S = { sig = LAYOUT .. sig, ep = epoch, os = field(osec), ou = field(ousec), fresh = true }
  for i = 1, L do
    local l = lim[i]
    l.s, l.ct, l.cc, l.alloc = '', {}, {}, nil
  end
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
        for _, t in ipairs(times) do l.a = max(l.a, t) + l.interval; recent_add(l, t) end
        l.l = newest
      else
        for _, t in ipairs(times) do
          local index = floor(t / max(l.window, 1))
          local slot = l.r[(index % 2) + 1]
          if slot[1] == index then slot[2] = slot[2] + 1 end
        end
      end
      -- token_bucket.rs drained_after: empty just after the newest.
      l.a = max(l.a, newest + l.interval * l.count)
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
          local index = floor(t / max(l.window, 1))
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
      local t = max(now - offset, 0)
      if late then t = max(t, st.se) end
      times[#times + 1] = t
    end
  end
  merge_times(times, fresh)
end

-- The ops --------------------------------------------------------------------------------
-- A state an earlier version of this script wrote (its scalars as text fields, its signature
-- without LAYOUT) is converted in place; a process of that version is then refused by the
-- signature check.
local function migrate()
  local flat = call('HGETALL', H)
  local o = {}
  for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end
  local function n(f, d)
    local v = o[f]
    if v == nil or v == '' then return d end
    return tonumber(v)
  end
  st.ls, st.bu, st.pc, st.cr, st.cs = n('ls'), n('bu', 0), n('pc'), n('cr'), n('cs')
  st.sq, st.se, st.ex = n('sq', 0), n('se', 0), n('ex')
  for i = 1, L do
    local l = lim[i]
    l.b, l.h, l.n, l.t = n('b' .. i, 0), n('h' .. i, 0), n('n' .. i, 0), n('t' .. i, 0)
    l.f, l.a, l.l = n('f' .. i), n('a' .. i, 0), n('l' .. i)
    l.r = { { n('ri' .. i .. 'a', -1), n('rc' .. i .. 'a', 0) },
            { n('ri' .. i .. 'b', -1), n('rc' .. i .. 'b', 0) } }
  end
  mine_seq = n(mine_field, 0)
  mine_listed = o[mine_field] ~= nil
  -- Ring 1 gains the scalars before its entries, and keeps the state's expiry. A ring 1 that
  -- holds calls but is gone stays gone: the state is then incomplete (see load), and seeded again.
  local l = lim[1]
  local entries = call('GET', l.key) or ''
  if l.n == 0 or #entries >= l.cap * 8 then
    l.s = packed() .. entries
    call('SET', l.key, l.s)
    local ttl = call('PTTL', H)
    if ttl > 0 then call('PEXPIRE', l.key, ttl) end
  end
  local drop = {}
  for name in pairs(o) do
    if name ~= 'ep' and name ~= 'os' and name ~= 'ou' and name ~= 'pw'
        and string.sub(name, 1, 2) ~= 'p:' then
      drop[#drop + 1] = name
    end
  end
  call('HDEL', H, unpack(drop))
  S.sig = LAYOUT .. sig
  call('HSET', H, 'sig', S.sig)
end

local function check_sig()
  if exists and S.sig == sig then migrate() end
  if exists and S.sig ~= LAYOUT .. sig then
    local stored = tostring(S.sig)
    if string.sub(stored, 1, #LAYOUT) == LAYOUT then
      stored = '"' .. string.sub(stored, #LAYOUT + 1) .. '"'
    else
      stored = '"' .. stored .. '" (by an earlier version of fabraix-scheduler)'
    end
    return redis.error_reply('FABRAIX_QUOTA_MISMATCH stored ' .. stored .. ', this process "' ..
      sig .. '"')
  end
  return nil
end

-- The head of every 'ok' answer: the epoch, the sequence number, the script's now, and the
-- state's block as a delay from now (0: none).
local function ok_head()
  return { 'ok', S.ep, st.sq, now, max(st.bu - now, 0) }
end

local function state_reply()
  local out = ok_head()
  for i = 1, L do
    local l = lim[i]
    local entries = ring_all(l)
    local parts = {}
    for k = 1, #entries do parts[k] = spack('>I4I4', entries[k][1], entries[k][2]) end
    out[#out + 1] = table.concat(parts)
  end
  -- The scalars as text fields (reply.rs).
  local function put(name, v)
    out[#out + 1] = name
    out[#out + 1] = field(v)
  end
  put('ls', st.ls); put('bu', st.bu); put('pc', st.pc); put('cr', st.cr); put('cs', st.cs)
  put('sq', st.sq); put('se', st.se)
  for i = 1, L do
    local l = lim[i]
    put('b' .. i, l.b); put('f' .. i, l.f); put('a' .. i, l.a); put('l' .. i, l.l)
    put('ri' .. i .. 'a', l.r[1][1]); put('rc' .. i .. 'a', l.r[1][2])
    put('ri' .. i .. 'b', l.r[2][1]); put('rc' .. i .. 'b', l.r[2][2])
  end
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
  return ok_head()
end

if op == 'seed' then
  -- ARGV[A] new epoch, ARGV[A+1] settle_ns, ARGV[A+2] '1' to replace the state when its epoch
  -- is the known one (a rollback), then the calls' offsets.
  if exists then load() end
  if not exists or S.incomplete or (ARGV[A + 2] == '1' and S.ep == known) then
    create(ARGV[A], back_for(A + 3))
    settle(tonumber(ARGV[A + 1]))
    merge_calls(A + 3, true)
    save()
  else
    if S.ep ~= known then
      merge_calls(A + 3, false)
      save()
    end
  end
  return ok_head()
end

if not exists or S.ep ~= known then
  return { 'seed', S.ep or '' }
end
load()
if S.incomplete then return { 'rollback', S.ep } end
-- A window log evicted or deleted apart from the hash: the state is incomplete, and is seeded
-- again as after a rollback. A ring that exists was written at its full size at once; ring 1
-- exists if its scalars do.
local holding = {}
for i = 1, L do
  local l = lim[i]
  if l.n > 0 then
    if i > 1 then holding[#holding + 1] = l.key end
    l.alloc = true
  end
end
if #holding > 0 and call('EXISTS', unpack(holding)) < #holding then
  return { 'rollback', S.ep }
end
-- Writes this process saw or made are gone (a failover to a replica that had not seen them).
local pruned = not mine_listed and mine <= pruned_below
if st.sq < known_seq or (writer ~= nil and mine > 0 and mine_seq < mine and not pruned) then
  return { 'rollback', S.ep }
end

if op == 'check' then
  -- The state is there, of the epoch this process knows, and not rolled back.
  return ok_head()
end

if op == 'reserve' then
  -- ARGV[A]: how many slots (1 ..), committed one after another; none while the state settles.
  if now < st.se then return { 'settle', st.se - now } end
  local k = tonumber(ARGV[A])
  local out = ok_head()
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
  block(now + max(tonumber(ARGV[A]), 0))
elseif op == 'cap' then
  local remaining = tonumber(ARGV[A])
  local reset = now + max(tonumber(ARGV[A + 1]), 0)
  if remaining == 0 then
    block(reset)
  elseif st.cr ~= nil and st.cs >= reset then
    st.cr = min(st.cr, remaining)
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
return ok_head()
