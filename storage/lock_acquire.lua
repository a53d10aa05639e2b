-- Take the lock KEYS[1] with a fresh fencing token from the counter KEYS[2].
-- ARGV[1]: lifetime in ms; ARGV[2]: "1" to take it over even when held (rollback --force).
-- Returns {1, token} when taken, {0, remaining ms} when someone else holds it.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('PTTL', KEYS[1])}
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return {1, token}
