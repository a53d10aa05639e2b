-- Write one batch of results, idempotently per (job, index).
-- KEYS, four per result: job hash, results hash, failed set, finished list.
-- ARGV: now, ttl, review key, index of unfinished jobs, then six per result: index, body,
-- is_failed, for_review, member, job name.
-- A job that is gone (expired or never created) or cancelled takes no more results: a cancelled
-- job's counters are final, whatever a worker that was mid-batch writes afterwards.
-- Each write stamps the job's "updated" time: the sweeper (storage/sweeper.py) leaves alone a
-- job that wrote anything within INKQ_SWEEP_STALL_S, a redelivered duplicate included.
-- A job leaves the sweeper's index as it finishes: a sweep walks the jobs still running, not every
-- job of the last half minute (at 200 jobs/s, 6,000 of them stalled a worker for about 3 s).
local now, ttl, review, active = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local marked = false
for i = 0, #KEYS / 4 - 1 do
  local job, results, failed, finished = KEYS[4*i+1], KEYS[4*i+2], KEYS[4*i+3], KEYS[4*i+4]
  local a = 5 + 6 * i
  local index, body, is_failed, for_review, member = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4]
  local name = ARGV[a+5]
  local total = redis.call('HGET', job, 'total')
  if total and redis.call('HGET', job, 'state') ~= 'cancelled' then
    local fresh = redis.call('HSET', results, index, body)
    redis.call('HSET', job, 'updated', now)
    if fresh == 1 then redis.call('HINCRBY', job, 'done', 1) end
    if is_failed == '1' then
      if redis.call('SADD', failed, index) == 1 then redis.call('HINCRBY', job, 'failed', 1) end
    elseif redis.call('SREM', failed, index) == 1 then
      redis.call('HINCRBY', job, 'failed', -1)
    end
    if for_review == '1' then
      redis.call('ZADD', review, now, member)
      marked = true
    end
    redis.call('EXPIRE', results, ttl)
    redis.call('EXPIRE', failed, ttl)
    if fresh == 1 and redis.call('HGET', job, 'done') == total then
      redis.call('HSET', job, 'finished', now)
      redis.call('RPUSH', finished, '1')
      redis.call('EXPIRE', finished, ttl)
      redis.call('ZREM', active, name)
    end
  end
end
if marked then
  -- A mark older than the TTL belongs to a job that has expired: trim it here, not only when
  -- someone lists the queue, and let the whole index expire a TTL after its newest mark.
  redis.call('ZREMRANGEBYSCORE', review, '-inf', '(' .. (now - ttl))
  redis.call('EXPIRE', review, ttl)
end
return #KEYS / 4
