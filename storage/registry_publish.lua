-- KEYS: lock, weights, meta, versions, current, labels used, labels tried.
-- ARGV: token, weights, meta JSON, version, sequence number, make current ('1'/'0'),
--       expected current ('' no check, '-' none), labels_upto, events channel.
if redis.call('EXISTS', KEYS[3]) == 1 then
  return redis.error_reply('INKQ_CONFLICT model version ' .. ARGV[4] .. ' already exists')
end
if ARGV[6] == '1' and ARGV[7] ~= '' then
  local current = redis.call('GET', KEYS[5]) or '-'
  if current ~= ARGV[7] then
    return redis.error_reply('INKQ_CONFLICT the current model is ' .. current .. ', not ' .. ARGV[7]
      .. ' as when this candidate was judged')
  end
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[5], ARGV[4])
  redis.call('SET', KEYS[6], ARGV[8])
  redis.call('SET', KEYS[7], ARGV[8])
  redis.call('PUBLISH', ARGV[9], ARGV[4])
end
return 1
