-- A batch of rate-limit decisions, each over several limits
-- (tollgate-limits, src/redis.rs). Mirrors src/algo.rs. Within one
-- decision every limit is checked first, and counters are written only when
-- all of them pass. Decisions run in order, each on the counters the ones
-- before it left, and the whole batch is atomic (one script call).
--
-- ARGV, per decision:
--   now in microseconds, or '' to use the server's clock (the default:
--       nodes' clocks never matter)
--   a unique member name for concurrency slots ('' when it takes none)
--   the number of limits n
--   then, per limit, 6 values: kind, a, b, c, d, e
--     g  GCRA          a = interval us, b = burst
--     w  window        a = window us, b = limit
--     m  month         a = limit, b..e = starts of the previous, current,
--                      next and following month (us); uses 3 KEYS
--     c  concurrency   a = max, b = lease us
-- KEYS: in the order of the decisions and their limits, one per limit, three
-- for a month (its previous, current and next period's counters).
--
-- Returns {server now, then per decision: allowed (1 or 0), and per limit
-- allowed, remaining, reset us, retry-after us, period start us (month
-- only, else 0)}, all integers. A decision whose now is outside one of its
-- months' b..e (the node's clock is months off) writes nothing and comes
-- back as -1 followed by zeros; the node asks again with bounds around the
-- returned server now.

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

local res = {server_now}
local k = 1
local a = 1
while a + 2 <= #ARGV do
  local now = server_now
  if ARGV[a] ~= '' then now = tonumber(ARGV[a]) end
  local member = ARGV[a + 1]
  local n = tonumber(ARGV[a + 2])
  a = a + 3
  local out = {}
  local writes = {}
  local all = 1
  local misplaced = false
  for _ = 1, n do
    local kind = ARGV[a]
    local p1, p2 = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local ok, remaining, reset, retry, start = 0, 0, 0, 0, 0
    if kind == 'g' then
      local key = KEYS[k]; k = k + 1
      local interval, burst = p1, p2
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      local span = interval * burst
      local new_tat = tat + interval
      local allow_at = new_tat - span
      if allow_at <= now then
        ok = 1
        remaining = math.floor((now - allow_at) / interval)
        reset = new_tat - now
        table.insert(writes, function()
          redis.call('SET', key, num(new_tat), 'PX', math.max(1, math.ceil((new_tat - now) / 1000)))
        end)
      else
        local room = now + span - tat
        if room > 0 then remaining = math.floor(room / interval) end
        reset = tat - now
        retry = allow_at - now
      end
    elseif kind == 'w' then
      local key = KEYS[k]; k = k + 1
      local w, limit = p1, p2
      local index = math.floor(now / w)
      local st = redis.call('HMGET', key, 'i', 'c', 'p')
      local si, sc, sp = tonumber(st[1] or '-1'), tonumber(st[2] or '0'), tonumber(st[3] or '0')
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
        local c2 = cur + 1
        table.insert(writes, function()
          redis.call('HSET', key, 'i', num(index), 'c', num(c2), 'p', num(prev))
          redis.call('PEXPIRE', key, math.ceil((rest + w) / 1000) + 1000)
        end)
      else
        remaining = math.max(0, limit - estimate)
        if cur + 1 <= limit then
          retry = math.max(1, offset_for(prev, limit - cur - 1, w) - elapsed)
        else
          retry = rest + offset_for(cur, limit - 1, w)
        end
      end
    elseif kind == 'm' then
      local limit = p1
      local b = {tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])}
      if now < b[1] or now >= b[4] then misplaced = true end
      local i = 3
      if now < b[2] then i = 1 elseif now < b[3] then i = 2 end
      local key = KEYS[k + i - 1]; k = k + 3
      local finish = b[i + 1]
      start = b[i]
      local count = tonumber(redis.call('GET', key) or '0')
      reset = finish - now
      if count + 1 <= limit then
        ok = 1
        remaining = limit - count - 1
        table.insert(writes, function()
          redis.call('INCR', key)
          -- Kept 40 days past the period, for usage and billing reads.
          redis.call('PEXPIREAT', key, math.ceil(finish / 1000) + 40 * 86400000)
        end)
      else
        remaining = math.max(0, limit - count)
        retry = finish - now
      end
    elseif kind == 'c' then
      local key = KEYS[k]; k = k + 1
      local max, lease = p1, p2
      redis.call('ZREMRANGEBYSCORE', key, '-inf', num(now))
      local taken = redis.call('ZCARD', key)
      if taken < max then
        ok = 1
        remaining = max - taken - 1
        table.insert(writes, function()
          redis.call('ZADD', key, num(now + lease), member)
          redis.call('PEXPIRE', key, math.ceil(lease / 1000))
        end)
      else
        retry = 1000000
      end
    end
    if ok == 0 then all = 0 end
    table.insert(out, ok)
    table.insert(out, remaining)
    table.insert(out, reset)
    table.insert(out, retry)
    table.insert(out, start)
    a = a + 6
  end

  if misplaced then
    table.insert(res, -1)
    for _ = 1, #out do table.insert(res, 0) end
  else
    if all == 1 then
      for _, f in ipairs(writes) do f() end
    end
    table.insert(res, all)
    for _, v in ipairs(out) do table.insert(res, v) end
  end
end
return res
