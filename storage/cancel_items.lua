-- Cancel a job, one page of items per call, idempotently.
-- KEYS: job hash, results hash, failed set, finished list.
-- ARGV: now, ttl, index of unfinished jobs, job name, then two per item: index, the body of its
-- `cancelled` error result.
-- The first call marks the job cancelled (from then on write_results.lua ignores it); every call
-- gives the page's items that have no result yet their error, so done and failed stay exact
-- however often a page is replayed. Returns -1 when the job was already complete, -2 when it is
-- gone, else how many items this call cancelled.
local job, results, failed, finished = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local now, ttl, active, name = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local total = redis.call('HGET', job, 'total')
if not total then return -2 end
if redis.call('HGET', job, 'state') ~= 'cancelled' then
  if tonumber(redis.call('HGET', job, 'done')) >= tonumber(total) then return -1 end
  redis.call('HSET', job, 'state', 'cancelled', 'cancelled', now)
end
local added = 0
for a = 5, #ARGV, 2 do
  if redis.call('HSETNX', results, ARGV[a], ARGV[a+1]) == 1 then
    redis.call('SADD', failed, ARGV[a])
    added = added + 1
  end
end
if added > 0 then
  redis.call('HINCRBY', job, 'failed', added)
  local done = redis.call('HINCRBY', job, 'done', added)
  redis.call('EXPIRE', results, ttl)
  redis.call('EXPIRE', failed, ttl)
  if done == tonumber(total) then
    redis.call('HSET', job, 'finished', now)
    redis.call('RPUSH', finished, '1')
    redis.call('EXPIRE', finished, ttl)
    redis.call('ZREM', active, name)  -- as write_results.lua does
  end
end
return added
