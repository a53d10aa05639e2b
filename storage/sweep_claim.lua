-- Claim a stalled job's requeue for the sweeper holding the sweep lock.
-- KEYS: sweep lock, job hash, sweep-seen hash. ARGV: token, job id, done and updated as the sweep
-- read them ('' for no result yet), now.
-- Fenced: a sweeper whose lock expired or was taken over requeues nothing. Checked in the same
-- step: the job is unchanged since the sweep read it (no result written, not cancelled), so a
-- worker that wrote results meanwhile wins. On success the job counts the sweep and its
-- "updated" time is now, so the stall clock starts again (the sweeper adds the items it sent to
-- the job's "requeued" once they are queued). Returns 1 when claimed, 0 when the job changed,
-- -1 when fenced.
local lock, job, seen = KEYS[1], KEYS[2], KEYS[3]
local token, id, done, updated, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', lock) ~= token then return -1 end
redis.call('HDEL', seen, id)
local state = redis.call('HGET', job, 'state')
if state == 'cancelled' or redis.call('HGET', job, 'done') ~= done
  or (redis.call('HGET', job, 'updated') or '') ~= updated then
  return 0
end
redis.call('HINCRBY', job, 'sweeps', 1)
redis.call('HSET', job, 'updated', now)
return 1
