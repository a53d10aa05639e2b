-- Record a job's last chunk as queued and end its submit, in one round trip: what a one-message
-- job (a single image) otherwise spent four on. KEYS: queued-chunks set, job hash, submit lease.
-- ARGV: chunk, ttl, state from, state to, the submitter's token.
-- The state moves only if it is still `from` (a cancel wins, as in set_state.lua), and the lease
-- is freed only if it still holds our token (never another submitter's, as in lock_release.lua).
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
if redis.call('HGET', KEYS[2], 'state') == ARGV[3] then
  redis.call('HSET', KEYS[2], 'state', ARGV[4])
end
if redis.call('GET', KEYS[3]) == ARGV[5] then
  redis.call('DEL', KEYS[3])
end
return 1
