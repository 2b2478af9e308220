-- A batch of rate-limit decisions, each over several limits
-- (tollgate-limits, src/redis.rs). Mirrors src/algo.rs. Within one
-- decision every limit is checked first, and counters change only when all
-- of them pass. Decisions run in order, each on the counters the ones
-- before it left, and the whole batch is atomic (one script call).
--
-- KEYS: the batch's counters, each once. Limits name them by index.
-- ARGV, per decision:
--   now in microseconds, or '' to use the server's clock (the default:
--       nodes' clocks never matter)
--   a unique member name for concurrency slots ('' when it takes none)
--   the number of limits n
--   then per limit its kind and values:
--     g  GCRA         key, interval us, burst
--     w  window       key, window us, limit
--     m  month        keys of the previous, current and next month, limit,
--                     starts of the previous, current, next and following
--                     month (us)
--     c  concurrency  key, max, lease us
--
-- A counter is read once per batch, kept here while the batch's decisions
-- use it, and written once at the end, as the last decision left it: the
-- same values and expiry that writing after every decision would leave.
--
-- Returns {server now, then per decision: allowed (1 or 0), and per limit
-- allowed, remaining, reset us, retry-after us, period start us (month
-- only, else 0)}, all integers. A decision whose now is outside one of its
-- months' bounds (the node's clock is months off) changes nothing and
-- comes back as -1 followed by zeros; the node asks again with bounds
-- around the returned server now.

local t = redis.call('TIME')
local server_now = tonumber(t[1]) * 1000000 + tonumber(t[2])

local function num(x)
  return string.format('%.0f', x)
end

local function weighted(prev, w, elapsed)
  return math.ceil(prev * (w - elapsed) / w)
end

-- As algo.rs: the closed form, settled on weighted() itself.
local function offset_for(count, room, w)
  if count <= room then return 0 end
  local o = math.ceil(w * (1 - room / count))
  if o < 0 then o = 0 elseif o > w then o = w end
  while o > 0 and weighted(count, w, o - 1) <= room do o = o - 1 end
  while o < w and weighted(count, w, o) > room do o = o + 1 end
  return o
end

-- Per key index: its value as the batch has left it so far (GCRA: the
-- theoretical arrival time; window: {index, count, previous count}; month
-- and concurrency: the count), its kind, and its expiry once changed
-- (a TTL in ms, or for a month an absolute time in ms).
local value, kind_of, expiry = {}, {}, {}
local is_changed, changed = {}, {}

-- Reads a counter. One of another type under the same key (a limit whose
-- algorithm changed in the config keeps its name) is deleted and counts as
-- new, instead of failing every decision of the batch.
local function read(cmd, key, ...)
  local r = redis.pcall(cmd, key, ...)
  if type(r) == 'table' and r.err then
    redis.call('DEL', key)
    return nil
  end
  return r
end

-- A GCRA time or a month's count: a number under a plain key.
local function number_at(ki)
  local v = value[ki]
  if v == nil then
    v = tonumber(read('GET', KEYS[ki]) or '0') or 0
    value[ki] = v
  end
  return v
end

local function window_state(ki)
  local v = value[ki]
  if v == nil then
    local st = read('HMGET', KEYS[ki], 'i', 'c', 'p') or {}
    v = {tonumber(st[1] or '-1') or -1, tonumber(st[2] or '0') or 0, tonumber(st[3] or '0') or 0}
    value[ki] = v
  end
  return v
end

local function slots_taken(ki, now)
  local v = value[ki]
  if v == nil then
    read('ZREMRANGEBYSCORE', KEYS[ki], '-inf', num(now))
    v = redis.call('ZCARD', KEYS[ki])
    value[ki] = v
  end
  return v
end

local res = {server_now}
local a = 1
-- One decision's changes, applied when all its limits pass: key index,
-- kind, new value, expiry (and for a slot, its score).
local c_ki, c_kind, c_val, c_exp, c_score = {}, {}, {}, {}, {}
while a + 2 <= #ARGV do
  local now = server_now
  if ARGV[a] ~= '' then now = tonumber(ARGV[a]) end
  local member = ARGV[a + 1]
  local n = tonumber(ARGV[a + 2])
  a = a + 3
  local at = #res + 1
  res[at] = 0
  local all = 1
  local misplaced = false
  local changes = 0
  for _ = 1, n do
    local kind = ARGV[a]
    local ok, remaining, reset, retry, start = 0, 0, 0, 0, 0
    if kind == 'g' then
      local ki, interval, burst = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      a = a + 4
      local tat = number_at(ki)
      if tat < now then tat = now end
      local span = interval * burst
      local new_tat = tat + interval
      local allow_at = new_tat - span
      if allow_at <= now then
        ok = 1
        remaining = math.floor((now - allow_at) / interval)
        reset = new_tat - now
        changes = changes + 1
        c_ki[changes], c_kind[changes], c_val[changes] = ki, 'g', new_tat
        c_exp[changes] = math.max(1, math.ceil((new_tat - now) / 1000))
      else
        local room = now + span - tat
        if room > 0 then remaining = math.floor(room / interval) end
        reset = tat - now
        retry = allow_at - now
      end
    elseif kind == 'w' then
      local ki, w, limit = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      a = a + 4
      local index = math.floor(now / w)
      local st = window_state(ki)
      local si, sc, sp = st[1], st[2], st[3]
      local prev, cur = 0, 0
      if si == index then prev, cur = sp, sc
      elseif si == index - 1 then prev, cur = sc, 0 end
      local elapsed = now - index * w
      local estimate = weighted(prev, w, elapsed) + cur
      local rest = w - elapsed
      reset = rest + w
      if estimate + 1 <= limit then
        ok = 1
        remaining = limit - estimate - 1
        changes = changes + 1
        c_ki[changes], c_kind[changes], c_val[changes] = ki, 'w', {index, cur + 1, prev}
        c_exp[changes] = math.ceil((rest + w) / 1000) + 1000
      else
        remaining = math.max(0, limit - estimate)
        if cur + 1 <= limit then
          retry = math.max(1, offset_for(prev, limit - cur - 1, w) - elapsed)
        else
          retry = rest + offset_for(cur, limit - 1, w)
        end
      end
    elseif kind == 'm' then
      local limit = tonumber(ARGV[a + 4])
      local b = {tonumber(ARGV[a + 5]), tonumber(ARGV[a + 6]), tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8])}
      if now < b[1] or now >= b[4] then misplaced = true end
      local i = 3
      if now < b[2] then i = 1 elseif now < b[3] then i = 2 end
      local ki = tonumber(ARGV[a + i])
      a = a + 9
      local finish = b[i + 1]
      start = b[i]
      local count = number_at(ki)
      reset = finish - now
      if count + 1 <= limit then
        ok = 1
        remaining = limit - count - 1
        changes = changes + 1
        c_ki[changes], c_kind[changes], c_val[changes] = ki, 'm', count + 1
        -- Kept 40 days past the period, for usage and billing reads.
        c_exp[changes] = math.ceil(finish / 1000) + 40 * 86400000
      else
        remaining = math.max(0, limit - count)
        retry = finish - now
      end
    elseif kind == 'c' then
      local ki, max, lease = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
      a = a + 4
      local taken = slots_taken(ki, now)
      if taken < max then
        ok = 1
        remaining = max - taken - 1
        changes = changes + 1
        c_ki[changes], c_kind[changes], c_val[changes] = ki, 'c', taken + 1
        c_exp[changes], c_score[changes] = math.ceil(lease / 1000), now + lease
      else
        retry = 1000000
      end
    else
      return redis.error_reply('unknown limit kind ' .. tostring(kind))
    end
    if ok == 0 then all = 0 end
    res[#res + 1] = ok
    res[#res + 1] = remaining
    res[#res + 1] = reset
    res[#res + 1] = retry
    res[#res + 1] = start
  end
  if misplaced then
    res[at] = -1
    for j = at + 1, #res do res[j] = 0 end
  else
    res[at] = all
    if all == 1 then
      for j = 1, changes do
        local ki = c_ki[j]
        value[ki], kind_of[ki], expiry[ki] = c_val[j], c_kind[j], c_exp[j]
        if not is_changed[ki] then
          is_changed[ki] = true
          changed[#changed + 1] = ki
        end
        if c_kind[j] == 'c' then
          redis.call('ZADD', KEYS[ki], num(c_score[j]), member)
        end
      end
    end
  end
end

-- Each changed counter written once, as the last decision left it.
for _, ki in ipairs(changed) do
  local key, kind, v = KEYS[ki], kind_of[ki], value[ki]
  if kind == 'g' then
    redis.call('SET', key, num(v), 'PX', expiry[ki])
  elseif kind == 'w' then
    redis.call('HSET', key, 'i', num(v[1]), 'c', num(v[2]), 'p', num(v[3]))
    redis.call('PEXPIRE', key, expiry[ki])
  elseif kind == 'm' then
    redis.call('SET', key, num(v))
    redis.call('PEXPIREAT', key, expiry[ki])
  else
    redis.call('PEXPIRE', key, expiry[ki])
  end
end
return res
