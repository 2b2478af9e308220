-- Folds the requests nodes admitted on their own into the shared GCRA
-- counters (tollgate-limits, synced mode; see src/synced.rs).
--
-- KEYS: GCRA counters, the same keys and format as decide.lua's
-- ARGV: per key, 3 values: interval us, burst, requests admitted since the
--       node's previous sync
--
-- Each counter's theoretical arrival time moves on by the admitted
-- requests, from now if it lay in the past, and never more than one burst
-- ahead of now: requests that nodes admitted beyond the limit between two
-- syncs empty the allowance, and are not charged to the time after it.
--
-- Returns {now, then each key's theoretical arrival time}, on the server's
-- clock, in microseconds.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {now}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local admitted = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  tat = tat + interval * admitted
  local ceiling = now + interval * burst
  if tat > ceiling then tat = ceiling end
  if tat > now then
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.max(1, math.ceil((tat - now) / 1000)))
  end
  out[#out + 1] = tat
end
return out
