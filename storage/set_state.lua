-- Move a job from one state to another only if it is still in the first (a cancel wins over a
-- submit that finishes queueing at the same moment). KEYS: job hash. ARGV: from, to.
-- Returns the state the job is in afterwards (false when the job is gone).
local state = redis.call('HGET', KEYS[1], 'state')
if state == ARGV[1] then
  redis.call('HSET', KEYS[1], 'state', ARGV[2])
  return ARGV[2]
end
return state
