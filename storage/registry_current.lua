-- KEYS: lock, target weights, current, labels used, labels tried.
-- ARGV: token, version, labels_upto of the version, events channel.
-- Points "current" at the version and resets the label watermarks to what it had learned.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.error_reply('INKQ_PRUNED model version ' .. ARGV[2] .. ' has no weights (pruned or lost)')
end
redis.call('SET', KEYS[3], ARGV[2])
redis.call('SET', KEYS[4], ARGV[3])
redis.call('SET', KEYS[5], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 1
