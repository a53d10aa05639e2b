-- Extend the lock KEYS[1] by ARGV[2] ms only while it still holds our token ARGV[1].
-- Returns 1 when renewed, 0 when the lock expired or was taken over (it is lost for good).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
