-- Next version number: INCR KEYS[1], kept above the newest number in the versions set KEYS[2]
-- so a lost counter never hands out a name that is still listed.
local n = redis.call('INCR', KEYS[1])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] and n <= tonumber(top[2]) then
  n = tonumber(top[2]) + 1
  redis.call('SET', KEYS[1], n)
end
return n
