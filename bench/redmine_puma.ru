# Bench B's second Redmine (bench/_redmine.py, --redmine puma): Debian's Redmine served
# by Puma, several processes and threads, closer to a production set-up than WEBrick.
#
# What differs from Redmine's own config.ru: no Rack::Lock (which scripts/redmine-local
# adds, for WEBrick, in additional_environment.rb), so reads are served side by side;
# writes still go one at a time, through a lock file shared by the processes, because
# Rails 6.1 on SQLite answers concurrent writes with 500 "database is locked".  A
# production Redmine on PostgreSQL or MySQL would not need that lock.
require "/usr/share/redmine/config/application"

Rails.application.config.middleware.delete Rack::Lock

# Every request but a read takes the lock file for its whole handling, body included.
class OneWriterAtATime
  def initialize(app, path)
    @app = app
    @path = path
  end

  def call(env)
    return @app.call(env) if %w[GET HEAD].include?(env["REQUEST_METHOD"])

    File.open(@path, File::RDWR | File::CREAT, 0o600) do |lock|
      lock.flock(File::LOCK_EX)
      status, headers, body = @app.call(env)
      chunks = []
      body.each { |chunk| chunks << chunk }
      body.close if body.respond_to?(:close)
      [status, headers, chunks]
    end
  end
end

Rails.application.config.middleware.insert_before 0, OneWriterAtATime,
                                                   ENV.fetch("REDMINE_WRITE_LOCK")
Rails.application.initialize!
run Rails.application
